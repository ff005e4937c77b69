"""Moved to e3rl.train.testing (the one testing seam); this name stays for existing imports."""

import sys

from e3rl.train import testing as _moved

sys.modules[__name__] = _moved
