"""MICS's three stages behind the method contract, and its ablation presets.

    path = pretrain(split, cfg, ctx)   # 1 + 2: pre-training and the shift vector dictionary, cached
    trained = train(split, cfg, ctx)   # 3: fusion fine-tuning on the labeled pairs (pre-trains if needed)

Stages 1 and 2 use no labels, so their checkpoint is shared by every label ratio (and by the Table IV
presets, which change only fine-tuning): it lives in `ctx.cache_dir/mics-pretrain/<hash>/`, keyed by
`cfg.data`, `cfg.model`, the `cfg.method.pretrain` and `cfg.method.dictionary` sections (their plain
`model_dump()`) and the seed.

Under torchrun (`benchmark.kit.distributed`) pre-training and fine-tuning run in every process, each on
its share of every batch, with gradients averaged; rank 0 alone takes the cache lock, builds the
dictionary and writes the checkpoint, and the others wait for it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.kit import distributed
from benchmark.kit.config_files import method_presets
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data import dataset_key
from benchmark.kit.data.loaders import step_generator
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.errors import ConfigError
from benchmark.kit.files import atomic_write, file_lock, stable_hash, warn_once, zip_problem
from benchmark.kit.models import create_backbone, init_fingerprint
from benchmark.kit.probe import probe_heads
from benchmark.kit.schema import RunConfig, TrainConfig
from benchmark.kit.training import TrainingLoop, atomic_save

from ..common import PairedBatches
from ..registry import Cost, Sizes, Stage, register_method
from .config import DictionaryConfig, MICSConfig, PretrainConfig
from .dictionary import extract_features, shift_dictionary
from .fusion import MICSClassifier
from .pretraining import SynergisticPretrainer

_log = logging.getLogger(__name__)
# Bump when pre-training or the dictionary changes what a cached checkpoint holds.
CACHE_VERSION = 1
PRESETS: dict[str, dict] = method_presets("mics")


def _check(settings: MICSConfig) -> None:
    fcfg, rcfg = settings.finetune, settings.pretrain.reconstructive
    if not fcfg.nbi and (fcfg.svd or fcfg.tmc):
        raise ConfigError("method.finetune.svd and method.finetune.tmc need the NBI branch (method.finetune.nbi=true)")
    if rcfg.loss not in ("image", "masked"):
        raise ConfigError(f"unknown method.pretrain.reconstructive.loss '{rcfg.loss}'; valid: image, masked")


def _training_pairs(data, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Every training pair in dataset order, so the pre-training is the same at every label ratio."""
    if isinstance(data, SemiSupervisedSplit):
        wli, nbi = data.train_pairs
        return wli, nbi, data.num_classes
    if num_classes is None:
        raise ValueError("pretrain on bare (wli, nbi) arrays needs num_classes (the dictionary's cluster count)")
    wli, nbi = data
    return np.asarray(wli), np.asarray(nbi), int(num_classes)


def _epochs_to_iterations(epochs: float, size: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * max(1, size // batch_size)))


def pretrain_iterations(pcfg: PretrainConfig, num_pairs: int) -> int:
    """Stage 1's iterations on `num_pairs` training pairs; 0 when every loss weight is 0 (Table III's
    vanilla row: the encoders keep their initialisation)."""
    if max(pcfg.a_dis, pcfg.a_res, pcfg.a_a, pcfg.a_adv) <= 0:
        return 0
    return _epochs_to_iterations(pcfg.epochs, num_pairs, pcfg.batch_size)


def finetune_train_cfg(cfg: RunConfig) -> TrainConfig:
    """Stage 3's train settings: `method.finetune.train` (only the keys it sets) laid over the profile's."""
    return cfg.train.model_copy(update=cfg.method.finetune.train.model_dump())


def finetune_iterations(cfg: RunConfig, num_labeled: int) -> int:
    """Stage 3's iterations: `finetune.epochs` over the labeled pairs, else its `train.iterations`."""
    fcfg = cfg.method.finetune
    train_cfg = finetune_train_cfg(cfg)
    if fcfg.epochs is None:
        return train_cfg.iterations
    return _epochs_to_iterations(fcfg.epochs, num_labeled, train_cfg.batch_size)


def _run_pretraining(wli: np.ndarray, nbi: np.ndarray, cfg: RunConfig, pcfg: PretrainConfig, ctx: RunContext,
                     folder: Path) -> tuple[dict, dict]:
    """Stage 1 -> (encoder state dicts, stats). With every weight 0 (Table III's vanilla row) the
    encoders stay at their random initialisation."""
    enc_w, enc_n = create_backbone(cfg.model, num_classes=0), create_backbone(cfg.model, num_classes=0)
    stats = {"iterations": 0, "pretrain_s": 0.0, "pretrain_cpu_s": 0.0}
    iterations = pretrain_iterations(pcfg, len(wli))
    if iterations > 0:
        start, cpu = time.perf_counter(), time.process_time()
        batch = pcfg.batch_size
        per_epoch = max(1, len(wli) // batch)
        queue = pcfg.consistency.queue_size
        if pcfg.a_dis > 0 and queue > len(wli):
            raise ConfigError(f"method.pretrain.consistency.queue_size {queue} exceeds the {len(wli)} training pairs")
        disc = create_backbone(cfg.model, num_classes=1) if pcfg.a_adv > 0 else None
        model = SynergisticPretrainer(enc_w, enc_n, pcfg, disc).to(ctx.device)
        forward_loss = ctx.distribute(model, "forward_loss")
        batches = PairedBatches(wli, nbi, None, batch, ctx.seed, ctx.device, salt=11)
        ramp = pcfg.consistency.alpha_ramp_epochs * per_epoch

        def step(it: int) -> dict:
            x_w, x_n = batches(it)
            warm = min(1.0, it / ramp) if ramp > 0 else 1.0  # ALBEF: alpha ramps up over the first epoch
            return forward_loss(x_w, x_n, pcfg.consistency.alpha * warm, step_generator(ctx.seed, it, salt=12))

        # the run's train settings with stage 1's optimizer (ALBEF's), no EMA, no layer decay, no validation
        train_cfg = cfg.train.model_copy(update={
            "optimizer": "adamw", "lr": pcfg.lr, "min_lr": pcfg.min_lr, "weight_decay": pcfg.weight_decay,
            "warmup_iterations": round(pcfg.warmup_epochs * per_epoch), "ema_momentum": 0.0, "layer_decay": 1.0,
            "eval_every": iterations})
        loop = TrainingLoop(model, train_cfg, dataclasses.replace(ctx, run_dir=folder), val=None, name="pretrain",
                            iterations=iterations, checkpoint_every=per_epoch,
                            params=[(n, p) for n, p in model.named_parameters() if p.requires_grad])
        loop.run(step)
        if distributed.is_main():
            loop.path.unlink(missing_ok=True)
        stats = {"iterations": iterations, "pretrain_s": round(time.perf_counter() - start, 2),
                 "pretrain_cpu_s": round(time.process_time() - cpu, 2)}
    return {"wli": enc_w.cpu().state_dict(), "nbi": enc_n.cpu().state_dict()}, stats


def _build_dictionary(encoders: dict, wli: np.ndarray, nbi: np.ndarray, num_classes: int, cfg: RunConfig,
                      dcfg: DictionaryConfig, ctx: RunContext) -> dict[str, torch.Tensor]:
    """Stage 2: frozen encoders -> per modality a (C, P, D) dictionary and its (C, D) cluster means."""
    out = {}
    for name, images in (("wli", wli), ("nbi", nbi)):
        encoder = create_backbone(cfg.model, num_classes=0)
        encoder.load_state_dict(encoders[name])
        feats = extract_features(encoder.to(ctx.device), images, ctx.device)
        out[name], out[f"{name}_mean"] = shift_dictionary(feats, num_classes, dcfg.samples, ctx.seed,
                                                          dcfg.kmeans_init)
    return out


def pretrain_key(cfg: RunConfig, seed: int) -> dict:
    """What a pre-training checkpoint is computed from, beyond the training pairs' count and classes (which
    `cfg.data` fixes): cells with equal keys share one checkpoint. Plain data (each section's `model_dump()`),
    hashed into the cache folder's name and written beside the checkpoint."""
    settings = cfg.method
    return {"version": CACHE_VERSION, "data": cfg.data.model_dump(), "model": cfg.model.model_dump(),
            "init": init_fingerprint(cfg.model), "pretrain": settings.pretrain.model_dump(),
            "dictionary": settings.dictionary.model_dump(), "seed": seed}


def _pretrain(data, cfg: RunConfig, ctx: RunContext, num_classes: int | None = None) -> tuple[Path, bool]:
    """-> (checkpoint path, whether it was already there)."""
    settings = cfg.method
    _check(settings)
    wli, nbi, num_classes = _training_pairs(data, num_classes)
    # the arrays' own key too: a new NBI simulation is a new pre-training
    key = {**pretrain_key(cfg, ctx.seed), "arrays": dataset_key(cfg.data), "num_classes": num_classes,
           "num_pairs": len(wli)}
    folder = Path(ctx.cache_dir) / "mics-pretrain" / stable_hash(key)
    path = folder / "pretrained.pt"
    # A second process asking for the same checkpoint waits at the lock; under torchrun rank 0 holds it for
    # all and says what it found.
    with file_lock(folder / "lock", enabled=distributed.is_main()):
        if distributed.is_main() and path.exists() and (problem := zip_problem(path)) is not None:
            warn_once(path, problem, "removed; the pre-training runs again")
            path.unlink()
        if distributed.broadcast_object(path.exists()):
            _log.info("MICS pre-training reused: %s", path)
            return path, True
        _log.info("MICS pre-training on %d pairs into %s", len(wli), folder)
        # Forked RNG: a cached and a freshly computed checkpoint leave the caller's random state alike.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            encoders, stats = _run_pretraining(wli, nbi, cfg, settings.pretrain, ctx, folder)
            if distributed.is_main():  # the others need no dictionary: they read the checkpoint rank 0 writes
                start, cpu = time.perf_counter(), time.process_time()
                dictionary = _build_dictionary(encoders, wli, nbi, num_classes, cfg, settings.dictionary, ctx)
                stats.update(dictionary_s=round(time.perf_counter() - start, 2), dictionary_cpu_s=round(time.process_time() - cpu, 2))
                atomic_save({"key": key, "encoders": encoders, "dictionary": dictionary, "stats": stats}, path)
                with atomic_write(folder / "key.json") as tmp:
                    tmp.write_text(json.dumps(key, indent=1, sort_keys=True, default=str))
                _log.info("MICS pre-training done: %s", stats)
    distributed.barrier()  # the other processes read the checkpoint rank 0 has just written
    return path, False


def pretrain(data: SemiSupervisedSplit | tuple[np.ndarray, np.ndarray], cfg: RunConfig, ctx: RunContext,
             num_classes: int | None = None) -> Path:
    """Stages 1 and 2 on every training pair (labels unused): the cached checkpoint's path, computed
    first if missing. Safe to call from several processes at once (one computes, the others wait).

    data: a split (its training pairs are taken in dataset order), or bare uint8 (wli, nbi) arrays
    (n, H, W, 3) with `num_classes` for the dictionary's cluster count."""
    return _pretrain(data, cfg, ctx, num_classes)[0]


def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    """Stage 3: fine-tune the pre-trained encoders with fusion, shifts and TMC on the labeled pairs."""
    fcfg = cfg.method.finetune
    path, reused = _pretrain(data, cfg, ctx)
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoders = []
    for name in ("wli", "nbi") if fcfg.nbi else ("wli",):
        encoder = create_backbone(cfg.model, num_classes=0)
        encoder.load_state_dict(state["encoders"][name])
        encoders.append(encoder)
    model = MICSClassifier(encoders[0], encoders[1] if fcfg.nbi else None, data.num_classes, fcfg,
                           state["dictionary"]).to(ctx.device)

    train_cfg = finetune_train_cfg(cfg)
    probe_heads(model.probed_heads(), data.labeled, ctx.device, train_cfg)
    batch = train_cfg.batch_size
    iterations = finetune_iterations(cfg, len(data.labeled))
    batches = PairedBatches(data.labeled.wli, data.labeled.nbi, data.labeled.labels, batch, ctx.seed, ctx.device, salt=13)
    anneal = max(1.0, fcfg.kl_anneal * iterations)
    forward_loss = ctx.distribute(model, "forward_loss")

    def step(it: int) -> dict:
        x_w, x_n, y = batches(it)
        return forward_loss(x_w, x_n, y, min(1.0, it / anneal), step_generator(ctx.seed, it, salt=14))

    start, cpu = time.perf_counter(), time.process_time()
    trained = TrainingLoop(model, train_cfg, ctx, data.val, name="finetune", iterations=iterations).run(step)
    trained.info.update(head=model.head, finetune_s=round(time.perf_counter() - start, 2),
                        finetune_cpu_s=round(time.process_time() - cpu, 2),
                        pretrain={"checkpoint": str(path), "reused": reused, **state["stats"]})
    return trained


def _pretrain_stage_iterations(cfg: RunConfig, sizes: Sizes) -> int:
    return pretrain_iterations(cfg.method.pretrain, sizes["train"])


def _finetune_stage_iterations(cfg: RunConfig, sizes: Sizes) -> int:
    return finetune_iterations(cfg, sizes["labeled"])


def _finetune_eval_every(cfg: RunConfig) -> int:
    return finetune_train_cfg(cfg).eval_every


def _shared_pretraining(cfg: RunConfig) -> str:
    return stable_hash(pretrain_key(cfg, cfg.seed))


def _shortened(cfg: RunConfig, steps: int, num_pairs: int) -> RunConfig:
    """`steps` pre-training and `steps` fine-tuning steps, one validation at the end."""
    cfg = cfg.model_copy(deep=True)
    cfg.train.iterations = steps
    cfg.train.eval_every = steps
    pcfg, fcfg = cfg.method.pretrain, cfg.method.finetune
    per_epoch = max(1, num_pairs // pcfg.batch_size)
    pcfg.epochs = (steps - 0.5) / per_epoch  # rounded up to `steps` by _epochs_to_iterations
    fcfg.epochs = None  # the fine-tuning then runs its train.iterations
    # set keys of the overlay: they dump, so they are laid over the profile's train section
    fcfg.train = fcfg.train.model_copy(update={"iterations": steps, "eval_every": steps})
    return cfg


# Pre-training and the dictionary (no validation) once per cache key, then the fine-tuning.
COST = Cost(stages=(Stage("pretrain", _pretrain_stage_iterations, eval_every=None, shared_key=_shared_pretraining,
                          extra="dictionary_s"),
                    Stage("finetune", _finetune_stage_iterations, eval_every=_finetune_eval_every)),
            shorten=_shortened)

# Pre-training takes every training pair, labeled or not: MICS runs at 100% labels too.
register_method("mics", modes=("fused",), config=MICSConfig, cost=COST, uses_unlabeled=False, label="MICS",
                description="MICS: synergistic pre-training, shift vector dictionary, fusion + TMC fine-tuning",
                paper_rows=(("pretrain-all", "MICS (all)"), ("finetune-all", "MICS (all)")))(train)
for _name, _preset in PRESETS.items():
    register_method(_name, modes=("fused",), description=_preset["description"], group="ablation",
                    config=MICSConfig, cost=COST, uses_unlabeled=False,
                    paper_rows=((_preset["paper"]["setting"], _preset["paper"]["label"]),))(train)
