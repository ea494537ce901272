"""MICS (arXiv 2509.17492): synergistic WLI-NBI pre-training, a shift vector dictionary and fusion
fine-tuning with trusted multi-view classification. Importing registers `mics` and its ablations."""
from .method import PRESETS, pretrain, train

__all__ = ["PRESETS", "pretrain", "train"]
