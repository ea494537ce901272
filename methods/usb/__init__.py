"""USB baselines: semilearn's own FixMatch, FlexMatch, Dash, FreeMatch and SoftMatch behind one adapter.

Importing this package registers them; semilearn itself is imported only when a run starts."""
from . import algorithms  # noqa: F401
from .adapter import USBNet, USBRun

__all__ = ["USBNet", "USBRun"]
