"""The typed keys of the USB baselines' `cfg.method`, declared next to their code; they reach semilearn
unchanged (`adapter.py`)."""
from __future__ import annotations

from pydantic import Field

from methods.schema import MethodConfig


class USBConfig(MethodConfig):
    """Keys shared by the USB baselines; they reach semilearn unchanged (methods/usb/adapter.py)."""

    T: float = Field(gt=0.0, description="sharpening / soft pseudo-label temperature")
    ulb_loss_ratio: float = Field(ge=0.0, description="lambda_u, weight of the unlabeled loss")
    use_cat: bool = Field(description="one forward over the concatenated batch (USB: true; same gradients)")


class FixMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    p_cutoff: float = Field(ge=0.0, le=1.0, description="fixed confidence threshold")


class FlexMatchConfig(FixMatchConfig):
    thresh_warmup: bool = Field(description="count unused unlabeled images in the learning effect")


class DashConfig(USBConfig):
    gamma: float = Field(gt=1.0, description="rho = C * gamma^-k * rho_init")
    C: float = Field(gt=0.0, description="constant of the rho schedule")
    rho_min: float = Field(ge=0.0, description="floor of the dynamic loss threshold")
    rho_update_every: int = Field(ge=1, description="iterations between updates of rho (budget-scaled)")
    num_wu_iter: int = Field(ge=0, description="supervised warm-up steps, counted inside train.iterations")


class FreeMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    ema_p: float = Field(ge=0.0, lt=1.0, description="momentum of the self-adaptive threshold and class histograms")
    ent_loss_ratio: float = Field(ge=0.0, description="weight of the self-adaptive fairness term")
    use_quantile: bool = Field(description="quantile instead of mean for the local thresholds")
    clip_thresh: bool = Field(description="clip the global threshold")


class SoftMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    dist_align: bool = Field(description="uniform distribution alignment")
    dist_uniform: bool = Field(description="align to the uniform distribution")
    per_class: bool = Field(description="one truncated Gaussian per class instead of one for all")
    ema_p: float = Field(ge=0.0, lt=1.0, description="momentum of the Gaussian's mean/variance and p_model")
    n_sigma: int = Field(ge=1, description="width of the truncated Gaussian, in standard deviations")
