"""RFPMSS (Shi et al., Scientific Reports 2025), semantic-structure-preserving multi-anchor learning,
adapted from CT/MRI/pathology with reports to paired WLI/NBI classification. Importing registers
`rfpmss` and its ablations."""
from .method import PRESETS, stage_iterations, train

__all__ = ["PRESETS", "stage_iterations", "train"]
