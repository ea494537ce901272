"""CMC (Zhou et al., arXiv 2408.07341), cross-modality collaboration, adapted from semi-supervised 3D
segmentation to paired WLI/NBI classification. Importing registers `cmc` and its ablations."""
from .method import PRESETS, stage_iterations, train

__all__ = ["PRESETS", "stage_iterations", "train"]
