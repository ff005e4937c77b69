"""e3rl inside TRL 1.16: per-prompt rollout counts and entropy-steered temperature for GRPO.

    from e3rl.integrations.trl import E3GRPOTrainer   # needs the `trl` extra

:class:`E3GRPOTrainer` is TRL's ``GRPOTrainer`` with an ``e3rl=`` mapping (the verl adapter's
``e3rl`` keys). Importing this package imports nothing from TRL; ``E3GRPOTrainer`` does. The
framework-free parts are in :mod:`.rounds`. See docs/trl.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["E3GRPOTrainer"]


def __getattr__(name: str) -> Any:
    if name in ("E3GRPOTrainer", "STATE_FILE"):
        from e3rl.integrations.trl import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
