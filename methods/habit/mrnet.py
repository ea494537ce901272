"""Mutual Reconciliation Network (MRNet), HABIT's answer to *perception bias*: one network sees space
through one receptive field only. MRNet runs two paths that perceive space differently, a convolution
path (local receptive field) and a permutator path (global token mixing), and lets a Mutual
Information Transfer module exchange their features after every stage, so each path reconciles the
other's view.

HABIT's paths are a DenseNet-121 and an MLP-Mixer. Here both are the suite's ViT
(`create_backbone(cfg.model)`), so every method shares one backbone family: the convolution path
gets a convolution's locality from an attention mask that lets each patch attend only to its k x k
neighbourhood of patches (k = `window`), the permutator path keeps full attention."""
from __future__ import annotations

from typing import NamedTuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchmark.kit.errors import ConfigError
from benchmark.kit.models import create_backbone
from benchmark.kit.schema import ModelConfig


class PathOutputs(NamedTuple):
    """Both paths' outputs, stacked on a leading axis: index 0 = convolution, 1 = permutator."""

    logits: torch.Tensor  # (2, N, num_classes)
    features: torch.Tensor  # (2, N, D) pooled pre-logit features


def local_attention_mask(grid: tuple[int, int], prefix_tokens: int, window: int) -> torch.Tensor:
    """Boolean (T, T) mask, True = may attend, over [prefix tokens, patches in raster order].

    A patch sees the patches of its `window` x `window` neighbourhood and nothing else, as a
    convolution's output sees its kernel's footprint; prefix (class) tokens see everything, so they
    pool the local features as a CNN's global average pooling does."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    reach = window // 2
    near = ((rows[:, None] - rows[None, :]).abs() <= reach) & ((cols[:, None] - cols[None, :]).abs() <= reach)
    tokens = prefix_tokens + grid[0] * grid[1]
    mask = torch.zeros(tokens, tokens, dtype=torch.bool)
    mask[:prefix_tokens] = True
    mask[prefix_tokens:, prefix_tokens:] = near
    return mask


class MutualInformationTransfer(nn.Module):
    """Feature exchange after one stage: each path adds a learned projection of the other's tokens.

    The projections start at zero, so the two paths start independent and learn what to take from
    each other."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_conv = nn.Linear(dim, dim)
        self.to_perm = nn.Linear(dim, dim)
        for proj in (self.to_conv, self.to_perm):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, conv: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return conv + self.to_conv(perm), perm + self.to_perm(conv)


class MRNet(nn.Module):
    """Two ViT paths of the profile's backbone joined by one MIT module per transformer block."""

    def __init__(self, model_cfg: ModelConfig, num_classes: int, window: int):
        super().__init__()
        self.conv_path = create_backbone(model_cfg, num_classes)
        self.perm_path = create_backbone(model_cfg, num_classes)
        if not isinstance(self.conv_path, VisionTransformer):
            raise ConfigError(f"HABIT's MRNet needs a timm VisionTransformer (model.arch), not {model_cfg.arch}")
        self.mit = nn.ModuleList(MutualInformationTransfer(self.conv_path.embed_dim) for _ in self.conv_path.blocks)
        grid = tuple(self.conv_path.patch_embed.grid_size)
        self.register_buffer("local_mask", local_attention_mask(grid, self.conv_path.num_prefix_tokens, window),
                             persistent=False)

    @staticmethod
    def _tokens(path: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
        return path.norm_pre(path.patch_drop(path._pos_embed(path.patch_embed(x))))

    def forward(self, x: torch.Tensor) -> PathOutputs:
        conv, perm = self._tokens(self.conv_path, x), self._tokens(self.perm_path, x)
        for conv_block, perm_block, mit in zip(self.conv_path.blocks, self.perm_path.blocks, self.mit):
            conv, perm = mit(conv_block(conv, attn_mask=self.local_mask), perm_block(perm))
        paths = ((self.conv_path, conv), (self.perm_path, perm))
        feats = [path.forward_head(path.norm(tokens), pre_logits=True) for path, tokens in paths]
        logits = [path.head(f) for (path, _), f in zip(paths, feats)]
        return PathOutputs(torch.stack(logits), torch.stack(feats))

    @property
    def heads(self) -> tuple[nn.Module, nn.Module]:
        """The paths' linear classifiers (what RFC's compensated features train)."""
        return self.conv_path.head, self.perm_path.head
