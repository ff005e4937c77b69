"""Moved to e3rl.train.optim; this name stays for existing imports (the same module object)."""

import sys

from e3rl.train import optim as _moved

sys.modules[__name__] = _moved
