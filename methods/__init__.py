"""Methods: one module (or package) per family. Importing this package registers them all."""
from . import bounds  # noqa: F401  (registers by import, as timm's model modules do)
from . import mics  # noqa: F401
from . import cmc  # noqa: F401
from . import rfpmss  # noqa: F401
from . import habit  # noqa: F401
from . import siavc  # noqa: F401
from . import usb  # noqa: F401  (FixMatch, FlexMatch, Dash, FreeMatch, SoftMatch through semilearn)
from . import controls  # noqa: F401  (the grid's positive and negative controls, on semilearn's FixMatch)
from .registry import MethodSpec, get_method, list_methods, register_method

__all__ = ["MethodSpec", "get_method", "list_methods", "register_method"]
