"""The training loop every method shares. A method supplies one `step(it) -> {"loss": ..., ...}`
closure; the loop owns everything around it: optimizer and schedule, AMP, the EMA model,
evaluation and model selection on validation, atomic checkpoints with exact resume, NaN checks
and the training curve.

Under torchrun (`benchmark.kit.distributed`) every process runs the same loop on its share of each
batch, and the step calls the model through `ctx.distribute`, so gradients are averaged and the
weights stay identical (checked after the first step and at the end). Every process evaluates on
validation (the same model on the same images: the same selection everywhere, nothing to broadcast,
and no process idles while another evaluates); rank 0 alone logs and writes checkpoints. A resumed
run loads that checkpoint in every process: rank 0's RNG state and method state (`extra_state`) go
to all of them, which is exact as long as the processes' states agree (they are seeded alike and
draw equal-sized shares; semilearn's FlexMatch is the exception: its class-wise counts are kept per
process, as in USB's own distributed runs)."""
from __future__ import annotations

import copy
import math
import random
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from benchmark.kit import distributed
from benchmark.kit.ahead import settle
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data.loaders import eval_batches
from benchmark.kit.data.types import PairedArrays
from benchmark.kit.files import atomic_write, warn_once, zip_problem
from benchmark.kit.schema import TrainConfig

StepFn = Callable[[int], dict[str, torch.Tensor]]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and its cell is marked failed."""


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or SGD) over `named_params`, with layer-wise lr decay when `train.layer_decay` < 1. `train_cfg`
    is a whole `train` section (`benchmark.kit.schema.TrainConfig`): its defaults live there only."""
    name, lr, wd = train_cfg.optimizer, train_cfg.lr, train_cfg.weight_decay
    groups = layer_decay_groups(list(named_params), lr, train_cfg.layer_decay)
    if name == "adamw":
        # The fused kernel updates every parameter in one pass: the same AdamW, without the handful
        # of small ops per tensor that cost ~4x more on the quick profile's ViT (docs/perf.md).
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=train_cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer '{name}'; valid: adamw, sgd")


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:patch_embed|cls_token|pos_embed|reg_token)(?:\.|$)")


def layer_decay_groups(named_params: list[tuple[str, nn.Parameter]], lr: float, decay: float) -> list[dict]:
    """Parameter groups whose lr is `lr * decay ** (L + 1 - layer)`, as BEiT, MAE and USB fine-tune ViTs:
    layer 0 is a ViT's embeddings, layer i + 1 its block i, and everything else (final norm, head, a
    method's own modules) the top layer L + 1, with the full lr. Layers are read from timm's parameter
    names, so any module that holds timm ViTs works; decay 1 gives one group."""
    if decay >= 1.0:
        return [{"params": [p for _, p in named_params]}]
    depth = 1 + max((int(m.group(1)) for n, _ in named_params if (m := _BLOCK.search(n))), default=-1)
    groups: dict[int, list] = {}
    for name, param in named_params:
        block = _BLOCK.search(name)
        layer = int(block.group(1)) + 1 if block else 0 if _EMBEDDING.search(name) else depth + 1
        groups.setdefault(layer, []).append(param)
    return [{"params": params, "lr": lr * decay ** (depth + 1 - layer)} for layer, params in sorted(groups.items())]


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup: int = 0, min_lr: float = 0.0):
    """Linear warm-up, then cosine decay from each group's lr down to `min_lr`."""
    base = [g["lr"] for g in optimizer.param_groups]

    def factor(step: int, base_lr: float) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        floor = min(1.0, min_lr / base_lr) if base_lr > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, b=b: factor(s, b) for b in base])


@torch.no_grad()
def predict_logits(predictor: nn.Module, part: PairedArrays, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits of a whole split part, in order, on the CPU."""
    was_training = predictor.training
    predictor.eval()
    out = [predictor.predict(batch).float().cpu() for batch, _ in eval_batches(part, batch_size, device)]
    predictor.train(was_training)
    return torch.cat(out)


def top1(predictor: nn.Module, part: PairedArrays, device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    pred = predict_logits(predictor, part, device, batch_size).argmax(1).numpy()
    return float((pred == part.labels).mean() * 100.0)


def atomic_save(obj, path: Path) -> None:
    """`torch.save` through `atomic_write`, into a file object: a full disk is then an OSError that
    names its cause (torch reports a failed write to a path as a bare RuntimeError)."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch's zip writer can mask the OSError with its own error
            cause = _os_error_in(err)
            if cause is None:
                raise
            raise cause from None


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError that `err` was raised while handling, if any."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast_dtype(ctx: RunContext) -> torch.dtype:
    return ctx.amp_dtype or torch.get_autocast_dtype(ctx.device.type)


def _to_device(value, device: torch.device):
    """`value` with every tensor in it (in dicts, lists and tuples) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def compile_blocks(model: nn.Module) -> int:
    """torch.compile every transformer block of `model` in place (regional compilation): whichever way a
    method calls its backbone (whole, a submodule, `forward_features`), the blocks run compiled, one
    compiled graph is reused by identical blocks, and parameter names do not change. Returns how many."""
    from timm.models.vision_transformer import Block

    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile()
    return len(blocks)


class _NonFinite:
    """The first iteration whose loss was NaN or infinite, kept on the device: asking the host after every
    step would wait for the device each time, so the loop asks only before it logs, evaluates, saves a
    checkpoint or ends (at most `log_every` = 10 steps later). The steps in between change nothing that
    lasts: the run stops with the iteration and value of the first non-finite loss, before any of them
    reaches a checkpoint."""

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def observe(self, it: int, loss: torch.Tensor) -> None:
        new = (self.first < 0) & ~torch.isfinite(loss.detach()).all()
        self.first = torch.where(new, it, self.first)
        self.value = torch.where(new, loss.detach().float().reshape(()), self.value)

    def check(self, name: str) -> None:
        if not distributed.all_ranks(self.first < 0):  # every process stops alike
            raise NonFiniteLoss(f"{name}: loss is {self.value.item()} at iteration {int(self.first)}")


class WeightAverage:
    """The evaluated weights: an exponential moving average of a model's parameters and buffers, as
    `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(decay)` and `use_buffers=True` keeps
    it (the same arithmetic, and the same checkpoint entries), with the tensor lists built once instead of
    at every step."""

    def __init__(self, model: nn.Module, decay: float):
        self.module, self.decay, self.n_averaged = copy.deepcopy(model), decay, 0
        self._pairs = [(a.detach(), b.detach()) for a, b in zip([*self.module.parameters(), *self.module.buffers()],
                                                                [*model.parameters(), *model.buffers()])]
        floats = [(a, b) for a, b in self._pairs if a.is_floating_point()]
        self._lerped = ([a for a, _ in floats], [b for _, b in floats])  # one foreach lerp over these
        self._counted = [(a, b) for a, b in self._pairs if not a.is_floating_point()]  # e.g. BatchNorm's counter

    @torch.no_grad()
    def update(self) -> None:
        """One step: the first copies the model; each later one moves every weight `1 - decay` of the way."""
        if self.n_averaged == 0:
            for averaged, current in self._pairs:
                averaged.copy_(current)
        else:
            if self._lerped[0]:
                torch._foreach_lerp_(*self._lerped, 1 - self.decay)
            for averaged, current in self._counted:
                averaged.copy_(averaged * self.decay + current * (1 - self.decay))
        self.n_averaged += 1

    def state_dict(self) -> dict:
        return {**{f"module.{k}": v for k, v in self.module.state_dict().items()},
                "n_averaged": torch.tensor(self.n_averaged, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict({k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"})
        self.n_averaged = int(state["n_averaged"])


class TrainingLoop:
    """Runs `iterations` steps of one model and selects the best validation checkpoint.

    model: an nn.Module Predictor (`predict`, `embed`) whose parameters `step` trains.
    train_cfg: a whole `train` section, every key present (a stage's changes laid over the run's own,
        `methods.common.stage_cfg`): the loop restates no default.
    params: (name, parameter) pairs to train when not all of `model`'s (names give layer-wise lr decay).
    extra_state / load_extra_state: a method's own state to checkpoint (e.g. USB hooks' buffers).
    """

    def __init__(
        self,
        model: nn.Module,
        train_cfg: TrainConfig,
        ctx: RunContext,
        val: PairedArrays | None,
        name: str = "train",
        iterations: int | None = None,
        params: Iterable[tuple[str, nn.Parameter]] | None = None,
        checkpoint_every: int | None = None,
        extra_state: Callable[[], dict] | None = None,
        load_extra_state: Callable[[dict], None] | None = None,
    ):
        self.model, self.cfg, self.ctx, self.val, self.name = model, train_cfg, ctx, val, name
        self.iterations = iterations if iterations is not None else train_cfg.iterations
        self.eval_every = train_cfg.eval_every
        self.checkpoint_every = checkpoint_every or self.eval_every
        self.optimizer = build_optimizer(params if params is not None else model.named_parameters(), train_cfg)
        self.scheduler = warmup_cosine(
            self.optimizer, self.iterations, train_cfg.warmup_iterations, train_cfg.min_lr)
        # Loss scaling is for float16 only: bfloat16 has float32's range (and no scaler, no per-step
        # check of the gradients on the host).
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp and _autocast_dtype(ctx) == torch.float16)
        decay = train_cfg.ema_momentum
        self.ema = WeightAverage(model, decay) if decay > 0 else None
        if ctx.compile:  # after the EMA copy: the evaluated copy runs eagerly
            compile_blocks(model)
        self.extra_state, self.load_extra_state = extra_state, load_extra_state
        self.path = Path(ctx.run_dir) / f"{name}_checkpoint.pt"
        self.best_state: dict | None = None
        self.best_val = -1.0
        self.best_step = -1
        self.start = 0
        if ctx.on_loop is not None:
            ctx.on_loop(self)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _state(self, step: int) -> dict:
        return {
            "step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_state": self.best_state, "best_val": self.best_val, "best_step": self.best_step, "rng": _rng_state(),
            "extra": self.extra_state() if self.extra_state else None,
            "health": self.ctx.health.state_dict() if self.ctx.health is not None else None,
        }

    def _resume(self) -> None:
        rewind = getattr(self.ctx.curves, "rewind", None)
        problem = zip_problem(self.path) if self.path.exists() else None
        if problem is not None:  # e.g. truncated by a full disk: starting over gives the same run
            warn_once(self.path, problem, "removed; the run starts from its first step")
            self.path.unlink(missing_ok=True)
        if not self.path.exists():
            if rewind is not None:  # starting from scratch: an earlier attempt's curve goes
                rewind(self.name, 0)
            return
        # Read on the CPU: the random states must stay CPU tensors (`torch.set_rng_state` takes nothing
        # else), and every tensor with a place on the device is copied there by what loads it.
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.best_state, self.best_val, self.start = state["best_state"], state["best_val"], state["step"]
        self.best_step = state.get("best_step", -1)  # checkpoints written before it was kept
        _set_rng_state(state["rng"])
        if self.load_extra_state and state["extra"] is not None:  # a method's buffers, e.g. USB hooks'
            self.load_extra_state(_to_device(state["extra"], self.ctx.device))
        if self.ctx.health is not None and state.get("health") is not None:
            self.ctx.health.load_state_dict(state["health"])
        if rewind is not None:
            rewind(self.name, self.start)

    def _evaluate(self, step: int) -> None:
        if self.val is None:
            return
        acc = top1(self.eval_model, self.val, self.ctx.device, self.cfg.eval_batch_size)
        self.ctx.log(step, {f"{self.name}/val_top1": acc})
        if acc > self.best_val:
            self.best_val, self.best_step = acc, step
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.eval_model.state_dict().items()}

    def run(self, step_fn: StepFn) -> Trained:
        try:
            return self._run(step_fn)
        finally:
            settle()  # nothing made ahead for this loop still in the making (`benchmark.kit.ahead`)

    def _run(self, step_fn: StepFn) -> Trained:
        self._resume()
        self.ctx.advance(self.name, self.start, self.iterations)
        self.model.train()
        log_every = max(1, min(self.eval_every, 10))
        nonfinite = _NonFinite(self.ctx.device)
        for it in range(self.start, self.iterations):
            with torch.autocast(self.ctx.device.type, dtype=self.ctx.amp_dtype, enabled=self.ctx.amp):
                out = step_fn(it)
            loss = out["loss"]
            pseudo_labels = out.pop("pseudo_labels", None)
            if pseudo_labels is not None and self.ctx.health is not None:
                out.update(self.ctx.health.observe(it, self.iterations, pseudo_labels))
            nonfinite.observe(it, loss)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            if it == self.start:
                distributed.check_replicas(self._trained_params(), f"{self.name}, first step")
            done = it + 1
            self.ctx.advance(self.name, done, self.iterations)
            logs, evaluates = done % log_every == 0 or done == self.iterations, done % self.eval_every == 0
            saves = done % self.checkpoint_every == 0 and done < self.iterations
            if logs or evaluates or saves:  # before anything of a non-finite run is logged, selected or saved
                nonfinite.check(self.name)
            if logs:
                values = {f"{self.name}/{k}": float(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items() if _is_scalar(v)}
                values[f"{self.name}/lr"] = self.optimizer.param_groups[0]["lr"]
                self.ctx.log(done, values)
            if evaluates or done == self.iterations:
                self._evaluate(done)
            if saves and distributed.is_main():
                atomic_save(self._state(done), self.path)
        distributed.check_replicas(self._trained_params(), f"{self.name}, last step")
        return self._finish()

    def _trained_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _finish(self) -> Trained:
        """The selected and the last model; one object when the last evaluation selected it (the runner then
        tests it once)."""
        last = self.eval_model
        best = last
        if self.best_state is not None and self.best_step != self.iterations:
            best = copy.deepcopy(last)
            best.load_state_dict(self.best_state)
        best.eval()
        last.eval()
        return Trained(best=best, last=last, val_top1_best=self.best_val, iterations=self.iterations)


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
