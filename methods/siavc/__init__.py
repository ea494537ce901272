"""SIAVC (IEEE TCSVT 2024) adapted from video to images: SAB and CAM, one module each."""
from . import train  # noqa: F401  (registers "siavc")
