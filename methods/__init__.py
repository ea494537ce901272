"""Methods: one module (or package) per family. Importing this package imports every one of them, and each
registers its methods by import (as timm's model modules do): a new method is one new file or folder here
plus its YAML, nothing else."""
import importlib
import pkgutil

from .registry import MethodSpec, get_method, list_methods, register_method

_NOT_FAMILIES = {"registry", "schema", "common"}  # what the families are built from

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _NOT_FAMILIES:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MethodSpec", "get_method", "list_methods", "register_method"]
