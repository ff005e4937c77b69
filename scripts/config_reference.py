"""Prints the configuration reference as a Markdown table (pasted into the README).

python scripts/config_reference.py
"""

from e3rl.config_io import describe


def main() -> None:
    print("| key | type | default | meaning |")
    print("|---|---|---|---|")
    for key, tp, default, doc in describe():
        tp = tp.replace("|", "\\|")
        print(f"| `{key}` | {tp} | `{default!r}` | {doc} |")


if __name__ == "__main__":
    main()
