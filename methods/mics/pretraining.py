"""MICS's synergistic pre-training (no labels): two ViT encoders, f_theta for WLI and f_phi for NBI,
trained together by

    L_pre = a_dis * L_dis + a_res * L_res + a_a * L_a  (+ a_adv * L_adv, off by default)

- consistency L_dis: WLI-NBI contrastive learning with momentum encoders and queues (ALBEF's ITC);
- reconstruction L_res: each encoder sees 25% of its image's patches; one shared decoder g
  reconstructs the image (MAE);
- alignment L_a: a global embedding maps both encoders' features to a high-dimensional space where
  paired images must find each other in the batch (InfoNCE);
- adversarial L_adv: a ViT discriminator tells reconstructions from images (the authors' released
  code), trained in the same step: its own loss reaches only its weights, the generator's term only
  the encoders and decoder.

A term whose weight is 0 builds no module and costs nothing, which is how Table III's rows differ.

Under torchrun (`benchmark.kit.distributed`) each process computes the loss of its share of the batch,
as ALBEF does: in-batch negatives and alignment pairs are the share's, and the queues get the momentum
features of the whole global batch, gathered from every process in rank order, so every process holds
the same queues. The masks of the reconstruction are drawn for the global batch, each share keeping
its rows.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.func import functional_call

from benchmark.kit.distributed import all_gather, shard_rows, world_size

from ..common import pooled
from .config import PretrainConfig
from .losses import consistency_loss, info_nce


class Decoder(nn.Module):
    """g: MAE's light decoder, shared by the two modalities. Visible tokens plus mask tokens at
    their positions -> pixels of every patch."""

    def __init__(self, enc_dim: int, num_patches: int, num_prefix: int, patch_pixels: int,
                 dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.num_prefix = num_prefix
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + num_patches, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_pixels)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """tokens: (N, P + K, D) encoded prefix + visible patches; ids_restore: (N, L) -> (N, L, p*p*3)."""
        x = self.embed(tokens)  # (N, P + K, d)
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        n, length = ids_restore.shape
        masked = self.mask_token.expand(n, length - visible.shape[1], -1)  # (N, L - K, d)
        patches = torch.cat([visible, masked], dim=1)  # (N, L, d), in shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # image order
        x = torch.cat([prefix, patches], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x))[:, self.num_prefix :])


class SynergisticPretrainer(nn.Module):
    """The two encoders and every head their pre-training needs; `forward_loss` is one step."""

    def __init__(self, enc_w: nn.Module, enc_n: nn.Module, pcfg: PretrainConfig,
                 discriminator: nn.Module | None = None):
        super().__init__()
        self.enc_w, self.enc_n, self.pcfg = enc_w, enc_n, pcfg
        dim = enc_w.num_features
        self.patch = enc_w.patch_embed.patch_size[0]
        if pcfg.a_dis > 0:
            ccfg = pcfg.consistency
            self.proj_w = nn.Linear(dim, ccfg.embed_dim)
            self.proj_n = nn.Linear(dim, ccfg.embed_dim)
            # Momentum copies, updated by EMA only (never by the optimizer).
            self.enc_w_m, self.enc_n_m = copy.deepcopy(enc_w), copy.deepcopy(enc_n)
            self.proj_w_m, self.proj_n_m = copy.deepcopy(self.proj_w), copy.deepcopy(self.proj_n)
            for _, p_m in self._momentum_pairs():
                p_m.requires_grad_(False)
            self.temp = nn.Parameter(torch.tensor(ccfg.temp))  # learnable, as in ALBEF
            self.register_buffer("queue_w", F.normalize(torch.randn(ccfg.embed_dim, ccfg.queue_size), dim=0))
            self.register_buffer("queue_n", F.normalize(torch.randn(ccfg.embed_dim, ccfg.queue_size), dim=0))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        if pcfg.a_res > 0 or pcfg.a_adv > 0:
            rcfg = pcfg.reconstructive
            self.decoder = Decoder(dim, enc_w.patch_embed.num_patches, enc_w.num_prefix_tokens, self.patch ** 2 * 3,
                                   rcfg.decoder_dim, rcfg.decoder_depth, rcfg.decoder_heads, rcfg.decoder_mlp_ratio)
        if pcfg.a_a > 0:
            self.global_embed = nn.Linear(dim, pcfg.aligned.embed_dim)
        if pcfg.a_adv > 0:
            self.discriminator = discriminator

    # --- consistency -------------------------------------------------------------------------
    def _momentum_pairs(self):
        for online, momentum in ((self.enc_w, self.enc_w_m), (self.enc_n, self.enc_n_m),
                                 (self.proj_w, self.proj_w_m), (self.proj_n, self.proj_n_m)):
            yield from zip(online.parameters(), momentum.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.pcfg.consistency.momentum
        online, momentum = map(list, zip(*self._momentum_pairs()))
        # One call over every tensor (a fused kernel on CUDA), each tensor as `mul_(m).add_(...)` computes it.
        torch._foreach_mul_(momentum, m)
        torch._foreach_add_(momentum, [p.detach() for p in online], alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, feat_w_m: torch.Tensor, feat_n_m: torch.Tensor) -> None:
        """Write the global batch's momentum features (this process's share gathered with every other
        process's, ALBEF's `_dequeue_and_enqueue`) over the oldest queue entries.

        A ring buffer: each step writes as many columns as the global batch has images (in rank
        order), wrapping around at the end, so the queue size need not be a multiple of the batch
        (ALBEF asserts it is) and the queue advances as in a single-process run."""
        feat_w_m, feat_n_m = all_gather(feat_w_m), all_gather(feat_n_m)
        size = self.queue_w.shape[1]
        cols = (self.queue_ptr + torch.arange(len(feat_w_m), device=feat_w_m.device)) % size
        # Under autocast the features come in the autocast dtype; the queues stay float32.
        self.queue_w[:, cols] = feat_w_m.t().to(self.queue_w.dtype)
        self.queue_n[:, cols] = feat_n_m.t().to(self.queue_n.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(feat_w_m)) % size)

    def forward_consistency(self, feat_w: torch.Tensor, feat_n: torch.Tensor,
                            x_w: torch.Tensor, x_n: torch.Tensor, alpha: float) -> torch.Tensor:
        """feat_*: (N, D) pooled online features of the full images -> L_dis."""
        self.momentum_update()
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            feat_w_m = F.normalize(self.proj_w_m(pooled(self.enc_w_m, x_w)), dim=1)  # (N, E)
            feat_n_m = F.normalize(self.proj_n_m(pooled(self.enc_n_m, x_n)), dim=1)
        loss = consistency_loss(F.normalize(self.proj_w(feat_w), dim=1), F.normalize(self.proj_n(feat_n), dim=1),
                                feat_w_m, feat_n_m, self.queue_w.clone(), self.queue_n.clone(), self.temp, alpha)
        self.enqueue(feat_w_m, feat_n_m)
        return loss

    # --- reconstruction ----------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, L, p*p*3)."""
        n, c, h, w = x.shape
        p = self.patch
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # (N, h, w, p, p, 3)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*3) -> (N, 3, H, W), square images."""
        n, length, _ = patches.shape
        p, side = self.patch, int(round(length ** 0.5))
        x = patches.reshape(n, side, side, p, p, 3).permute(0, 5, 1, 3, 2, 4)  # (N, 3, h, p, w, p)
        return x.reshape(n, 3, side * p, side * p)

    @staticmethod
    def random_masking(n: int, length: int, ratio: float, generator: torch.Generator, device: torch.device):
        """Per image, keep a random `int(L * (1 - ratio))` patches (MAE's argsort of uniform noise).
        The noise is drawn for the global batch (n images per process) and this process's rows kept.

        -> ids_keep (N, K), ids_restore (N, L), mask (N, L) with 1 = hidden."""
        keep = int(length * (1 - ratio))
        noise = shard_rows(torch.rand(n * world_size(), length, generator=generator)).to(device)
        ids_shuffle = noise.argsort(dim=1)  # ascending: the first `keep` are kept
        ids_restore = ids_shuffle.argsort(dim=1)
        mask = torch.ones(n, length, device=device)
        mask[:, :keep] = 0
        return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)

    def forward_decoder(self, encoder: nn.Module, x: torch.Tensor, generator: torch.Generator):
        """Encode a masked image, decode every patch. -> predicted patches (N, L, p*p*3), mask (N, L)."""
        length = encoder.patch_embed.num_patches
        ids_keep, ids_restore, mask = self.random_masking(len(x), length, self.pcfg.reconstructive.mask_ratio,
                                                          generator, x.device)
        return self.decoder(encode_visible(encoder, x, ids_keep), ids_restore), mask

    def forward_reconstruction_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L2 between image and reconstruction: over the whole image (paper Eq. 6, `image`) or,
        as MAE, the mean per-patch error over hidden patches only (`masked`)."""
        err = (pred - self.patchify(x)) ** 2  # (N, L, p*p*3)
        if self.pcfg.reconstructive.loss == "image":
            return err.mean()
        return (err.mean(-1) * mask).sum() / mask.sum()

    # --- adversarial -------------------------------------------------------------------------
    def forward_adversarial(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(generator term, discriminator term). The generator term runs the discriminator on
        detached weights, so minimising the sum trains each side only on its own objective."""
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        fooled = functional_call(self.discriminator, frozen, (fake,))  # (N, 1)
        gen = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        disc = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        return gen, disc

    # --- one step ----------------------------------------------------------------------------
    def forward_loss(self, x_w: torch.Tensor, x_n: torch.Tensor, alpha: float,
                     generator: torch.Generator) -> dict[str, torch.Tensor]:
        """x_w, x_n: (N, 3, H, W) paired images -> {"loss", and each active term}."""
        c = self.pcfg
        out: dict[str, torch.Tensor] = {}
        if c.a_dis > 0 or c.a_a > 0:
            feat_w, feat_n = pooled(self.enc_w, x_w), pooled(self.enc_n, x_n)  # (N, D)
            if c.a_dis > 0:
                out["l_dis"] = self.forward_consistency(feat_w, feat_n, x_w, x_n, alpha)
            if c.a_a > 0:
                out["l_a"] = info_nce(self.global_embed(feat_w), self.global_embed(feat_n), c.aligned.temp)
        if c.a_res > 0 or c.a_adv > 0:
            pred_w, mask_w = self.forward_decoder(self.enc_w, x_w, generator)
            pred_n, mask_n = self.forward_decoder(self.enc_n, x_n, generator)
            if c.a_res > 0:
                out["l_res"] = (self.forward_reconstruction_loss(x_w, pred_w, mask_w)
                                + self.forward_reconstruction_loss(x_n, pred_n, mask_n)) / 2
            if c.a_adv > 0:
                fake = torch.cat([self.unpatchify(pred_w), self.unpatchify(pred_n)])
                out["l_adv"], out["l_disc"] = self.forward_adversarial(torch.cat([x_w, x_n]), fake)
        weights = {"l_dis": c.a_dis, "l_res": c.a_res, "l_a": c.a_a, "l_adv": c.a_adv, "l_disc": 1.0}
        out["loss"] = sum(weights[k] * v for k, v in out.items())
        return out


def encode_visible(encoder: nn.Module, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """A timm ViT on the kept patches only, as MAE's encoder: positions are embedded before
    dropping, so each token still knows where it is.

    x: (N, 3, H, W), ids_keep: (N, K) -> (N, P + K, D) with the P prefix (class) tokens first."""
    tokens = encoder._pos_embed(encoder.patch_embed(x))  # (N, P + L, D)
    prefix = encoder.num_prefix_tokens
    visible = torch.gather(tokens[:, prefix:], 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    tokens = torch.cat([tokens[:, :prefix], visible], dim=1)
    return encoder.norm(encoder.blocks(encoder.norm_pre(tokens)))
