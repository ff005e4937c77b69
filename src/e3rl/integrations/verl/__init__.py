"""e3rl inside verl 0.9.x (Ray, FSDP, vLLM/SGLang): per-prompt budgets and temperature control.

Needs the optional ``verl`` extra (its own environment: ``make verl-venv``). Nothing here is
imported by ``import e3rl``; importing this package itself imports nothing from verl either.

Modules:

* :mod:`.control` -- the driver-side state (tracker, allocator, controller); no verl needed.
* :mod:`.batch` -- helpers between verl's batches and the control.
* :mod:`.algos` -- ``e3rl_grpo`` / ``e3rl_drgrpo`` / ``e3rl_rloo`` and ``e3rl_ppo`` in verl's registries.
* :mod:`.agent_loop` -- ``e3rl_single_turn``: per-sample sampling temperature.
* :mod:`.trainer` -- :class:`E3rlSyncTrainer`, verl's sync v1 trainer with e3rl's controls.
* :mod:`.runner`, :mod:`.entry` -- ``python -m e3rl.integrations.verl`` with Hydra overrides.

See docs/verl.md.
"""
