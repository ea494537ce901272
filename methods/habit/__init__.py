"""HABIT (IEEE TMI 2023) on the suite's ViT: MRNet, RFC and CMH, one module each."""
from . import train  # noqa: F401  (registers "habit")
