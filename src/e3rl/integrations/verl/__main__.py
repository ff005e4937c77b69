"""``python -m e3rl.integrations.verl``: see :mod:`e3rl.integrations.verl.entry`."""

from e3rl.integrations.verl.entry import main

if __name__ == "__main__":
    main()
