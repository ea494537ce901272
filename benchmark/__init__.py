"""A benchmark suite for semi-supervised multimodal (WLI + NBI) medical image classification."""

__version__ = "0.1.0"
