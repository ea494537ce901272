"""Methods: one module (or package) per family. Importing this package registers them all."""
from . import (
    bounds,  # noqa: F401  (registers by import, as timm's model modules do)
    cmc,  # noqa: F401
    controls,  # noqa: F401  (the grid's positive and negative controls, on semilearn's FixMatch)
    habit,  # noqa: F401
    mics,  # noqa: F401
    rfpmss,  # noqa: F401
    siavc,  # noqa: F401
    usb,  # noqa: F401  (FixMatch, FlexMatch, Dash, FreeMatch, SoftMatch through semilearn)
)
from .registry import MethodSpec, get_method, list_methods, register_method

__all__ = ["MethodSpec", "get_method", "list_methods", "register_method"]
