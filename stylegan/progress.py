"""How long work reports how far it has got."""
from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[float, str], None]  # (fraction done in [0, 1], what is being done)
