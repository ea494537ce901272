"""A device-agnostic adapter that runs semilearn's (USB's) own algorithm objects inside our TrainingLoop.

semilearn builds the algorithm (its network, its hooks, its `train_step`); the harness owns the loop:
iterations, batches, optimizer and schedule, AMP, the evaluated EMA model, validation and checkpoints.

What runs of semilearn, and what does not:
- `train_step` runs as is, and with it every hook it calls by name: `MaskingHook` (FixMatch's fixed
  threshold, FlexMatch's class-wise thresholds, Dash's dynamic threshold, FreeMatch's self-adaptive
  thresholds, SoftMatch's truncated-Gaussian weights), `PseudoLabelingHook` and `DistAlignHook`
  (SoftMatch's distribution alignment). None of these five algorithms has an `after_train_step` hook
  of its own.
- The generic hooks `AlgorithmBase.set_hooks` registers are removed, never called: ParamUpdate (we step
  the optimizer), EMA (our TrainingLoop's EMA is the evaluated model), Evaluation, Checkpoint,
  DistSamplerSeed, Timer (CUDA events), Logging, wandb, aim. So are semilearn's optimizer, scheduler and
  `ema_model` (set to None after construction so nothing can use them by accident).
- semilearn's `amp` is off: the TrainingLoop wraps `train_step` in autocast and owns the one GradScaler.
- Dash's `warmup()` (CUDA-only) is replaced by the same thing done here: the first `num_wu_iter`
  steps of the loop minimise `algorithm.ce_loss` on labeled batches only; then `rho_init` = the mean
  cross-entropy of the (non-EMA) model on the validation split, as `Dash.warmup` sets it from
  `evaluate()` (USB's usb_cv configs use ema_m=0, so its evaluate() sees the raw model too), and
  `algorithm.it` restarts from 0. The warm-up counts inside the profile's iteration budget, so every
  method makes the same number of parameter updates (USB runs it on top of num_train_iter).
- Under torchrun (`benchmark.kit.distributed`) `algorithm.model` is the DistributedDataParallel wrapper of
  our network, so `train_step` averages gradients across processes, and semilearn's own switches
  (`distributed`, `rank`, `world_size`) are on, so its hooks gather their batch statistics from every
  process as in USB's distributed runs (FreeMatch's and SoftMatch's thresholds, distribution
  alignment). FlexMatch's class-wise counts stay per process, as in USB.
"""
from __future__ import annotations

import contextlib
import io
import random
import warnings
from collections import OrderedDict
from fractions import Fraction
from inspect import signature
from typing import Callable

import torch
import torch.nn.functional as F

from benchmark.kit import distributed
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.errors import ConfigError
from benchmark.kit.health import PseudoLabels
from benchmark.kit.models import create_backbone
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop, predict_logits

from ..common import LabeledBatches, UnlabeledBatches, WLIClassifier, import_semilearn, probe_wli_head
from .config import DashConfig

_OURS = ("name", "mode", "time_constants", "rho_update_every")  # keys of cfg.method that are not semilearn arguments
_STATE_TYPES = (torch.Tensor, bool, int, float, type(None))
_ALGORITHM_STATE = ("it", "use_hard_label", "rho_init", "rho", "warmup_stage", "p_model", "label_hist", "time_p")


class USBNet(WLIClassifier):
    """Our timm backbone behind semilearn's network interface; still a harness Predictor."""

    def forward(self, x: torch.Tensor, only_fc: bool = False, only_feat: bool = False):
        head = self.backbone.get_classifier()
        if only_fc:  # x are features
            return head(x)
        feat = self.features(x)
        return feat if only_feat else {"logits": head(feat), "feat": feat}


class _HookOutputs(dict):
    """For the `with` block, what the algorithm's named hook calls return (its mask and pseudo-labels, for
    the run's health), by wrapping semilearn's `call_hook`; the calls themselves are unchanged, but for
    those `replace` answers instead (the controls' pseudo-labels, `methods.controls`)."""

    def __init__(self, algorithm, names: tuple[str, ...], replace: dict[str, Callable[[], torch.Tensor]]):
        super().__init__()
        self.algorithm, self.names, self.replace = algorithm, names, replace

    def __enter__(self) -> "_HookOutputs":
        original = type(self.algorithm).call_hook.__get__(self.algorithm)

        def call_hook(fn_name, hook_name=None, *args, **kwargs):
            if fn_name in self.replace:
                result = self.replace[fn_name]()
            else:
                result = original(fn_name, hook_name, *args, **kwargs)
            if fn_name in self.names:
                self[fn_name] = result
            return result

        self.algorithm.call_hook = call_hook
        return self

    def __exit__(self, *exc) -> None:
        del self.algorithm.call_hook


def usb_config(name: str, values: dict):
    """`semilearn.get_config`, without letting its free-port lookup move the global `random` stream."""
    state = random.getstate()
    try:
        return import_semilearn().get_config({"algorithm": name, **values})
    finally:
        random.setstate(state)


class USBRun:
    """One run of semilearn algorithm `name` on a split; `fit()` trains it and returns the Trained."""

    def __init__(self, name: str, data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext,
                 targets: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(data.unlabeled) == 0:
            raise ConfigError(f"{name} needs unlabeled images, and at {data.labels_percent:g}% labels there "
                              "are none; use fullysupervised for the all-labels bound")
        self.name, self.data, self.cfg, self.ctx = name, data, cfg, ctx
        self.targets = targets  # unlabeled indices -> pseudo-labels in place of semilearn's (the controls)
        train = cfg.train
        self.iterations = train.iterations
        batch, uratio = train.batch_size, train.uratio
        self.labeled = LabeledBatches(data.labeled, batch, ctx.seed, ctx.device)
        self.unlabeled = UnlabeledBatches(data.unlabeled, batch * uratio, ctx.seed, ctx.device, cfg.method.mode)
        # The method's keys as semilearn reads them: the plain dict of its typed section, less ours.
        method = {k: v for k, v in cfg.method.model_dump().items() if k not in _OURS}
        known = vars(usb_config(name, {}))  # semilearn's arguments of this algorithm, with defaults
        # Dash (the one of the five with a warm-up, in semilearn and in its schema): semilearn runs warmup()
        # before train(); we run the same warm-up as the loop's first steps.
        dash = cfg.method if isinstance(cfg.method, DashConfig) else None
        self.warmup = dash.num_wu_iter if dash is not None else 0
        if self.warmup >= self.iterations:
            raise ConfigError(f"method.num_wu_iter ({self.warmup}) must be smaller than train.iterations ({self.iterations})")
        ssl_iters = self.iterations - self.warmup
        owned = self._harness_args(ssl_iters, batch, uratio)
        for key in method:
            where = f"'{key}' in configs/methods/{name}.yaml"
            if key not in known:
                raise ConfigError(f"unknown semilearn argument {where}; valid: {', '.join(sorted(set(known) - set(owned)))}")
            if key in owned:
                raise ConfigError(f"{where}: the profile sets it for every method (train/model/data sections)")
        self.algorithm = self._build({**method, **owned})
        self.step_inputs = signature(self.algorithm.train_step).parameters  # as semilearn's process_batch filters
        if dash is not None:
            # Dash's hook updates rho when `it % (10 * num_iter_per_epoch) == 0`: an exact fraction gives
            # the budget-scaled interval whatever it is (semilearn's integer epochs give multiples of 10).
            self.algorithm.num_iter_per_epoch = Fraction(dash.rho_update_every, 10)
        self.model: USBNet = self.algorithm.model  # the parameters the TrainingLoop trains
        probe_wli_head(self.model, data.labeled, ctx.device, train)

    def _harness_args(self, ssl_iters: int, batch: int, uratio: int) -> dict:
        """The semilearn arguments the harness decides, the same for every method of a profile."""
        data, train, dev = self.data, self.cfg.train, self.ctx.device
        return {
            "num_classes": data.num_classes, "num_labels": len(data.labeled),
            "lb_dest_len": len(data.labeled), "ulb_dest_len": len(data.unlabeled),
            "num_train_iter": ssl_iters, "batch_size": batch, "uratio": uratio,
            "eval_batch_size": train.eval_batch_size,
            "dataset": "mics-bench-arrays",  # unknown to semilearn: it loads no data
            "save_dir": str(self.ctx.run_dir), "save_name": "usb", "resume": False,
            "gpu": dev.index if dev.type == "cuda" else None,
            # Off while semilearn builds (its constructor then waits at barriers meant for its own data
            # loading); fit() turns them on under torchrun.
            "distributed": False, "rank": 0, "world_size": 1, "num_workers": 0,
            "net": self.cfg.model.arch, "use_pretrain": False, "pretrain_path": "",
            "optim": "AdamW", "lr": train.lr, "weight_decay": train.weight_decay,
            "amp": False,  # TrainingLoop's autocast and GradScaler
            "ema_m": 0.0,  # semilearn's EMA never runs; TrainingLoop's EMA is the evaluated model
        }

    def _build(self, values: dict):
        get_algorithm = import_semilearn().get_algorithm
        from semilearn.core import hooks

        dev = self.ctx.device
        args = usb_config(self.name, values)

        model_cfg = self.cfg.model  # not `self`: the algorithm keeps net_builder, and a cycle back to
        # this run would keep its split alive until the next full garbage collection

        def net_builder(num_classes: int, **_ignored) -> USBNet:  # starting weights: cfg.model.init
            return USBNet(create_backbone(model_cfg, num_classes))

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # torch.cuda.amp.GradScaler() on a CPU-only machine, etc.
            algorithm = get_algorithm(args, net_builder, tb_log=None, logger=None)
        algorithm.model = algorithm.model.to(dev)
        algorithm.ema_model = algorithm.optimizer = algorithm.scheduler = None
        generic = (hooks.ParamUpdateHook, hooks.EMAHook, hooks.EvaluationHook, hooks.CheckpointHook,
                   hooks.DistSamplerSeedHook, hooks.TimerHook, hooks.LoggingHook, hooks.WANDBHook, hooks.AimHook)
        algorithm._hooks = [h for h in algorithm._hooks if not isinstance(h, generic)]
        algorithm.hooks_dict = OrderedDict((h.name, h) for h in algorithm._hooks)
        return algorithm

    # -- one step -------------------------------------------------------------------------------
    def step(self, it: int) -> dict:
        alg = self.algorithm
        x_lb, y_lb = self.labeled(it)
        if it < self.warmup:  # Dash.warmup: supervised only
            sup_loss = alg.ce_loss(alg.model(x_lb)["logits"], y_lb, reduction="mean")
            return {"loss": sup_loss, "sup_loss": sup_loss.detach()}
        if self.warmup and getattr(alg, "rho_init", None) is None:
            alg.rho_init = alg.rho = self.validation_loss()
            alg.warmup_stage = False
        x_ulb_w, x_ulb_s, idx_ulb = self.unlabeled(it)
        batch = {"x_lb": x_lb, "y_lb": y_lb, "x_ulb_w": x_ulb_w, "x_ulb_s": x_ulb_s, "idx_ulb": idx_ulb}
        alg.it = it - self.warmup
        replace = {"gen_ulb_targets": lambda: self.targets(idx_ulb)} if self.targets is not None else {}
        with _HookOutputs(alg, ("masking", "gen_ulb_targets"), replace) as seen:
            out, log = alg.train_step(**{k: v for k, v in batch.items() if k in self.step_inputs})
        alg.it += 1
        step = {"loss": out["loss"], **{k.rsplit("/", 1)[-1]: v for k, v in log.items()}}
        if len(seen) == 2:
            step["pseudo_labels"] = PseudoLabels(idx_ulb, seen["masking"], seen["gen_ulb_targets"])
        return step

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean cross-entropy on the validation split: Dash's rho_init."""
        logits = predict_logits(self.model, self.data.val, self.ctx.device, self.cfg.train.eval_batch_size)
        return F.cross_entropy(logits, torch.as_tensor(self.data.val.labels)).item()

    # -- the algorithm's own state, checkpointed with the loop ------------------------------------
    def state_dict(self) -> dict:
        """Every hook's buffers and counters, and the algorithm's (it, rho_init, ...)."""
        hooks = {name: {k: v for k, v in vars(h).items() if isinstance(v, _STATE_TYPES)}
                 for name, h in self.algorithm.hooks_dict.items()}
        algo = {k: getattr(self.algorithm, k) for k in _ALGORITHM_STATE if hasattr(self.algorithm, k)}
        return {"hooks": hooks, "algorithm": algo}

    def load_state_dict(self, state: dict) -> None:
        for name, values in state["hooks"].items():
            for key, value in values.items():
                setattr(self.algorithm.hooks_dict[name], key, value)
        for key, value in state["algorithm"].items():
            setattr(self.algorithm, key, value)

    def _distribute(self) -> None:
        """Under torchrun: `train_step` calls the DDP wrapper, and semilearn's hooks gather across processes."""
        alg = self.algorithm
        alg.model = self.ctx.distribute(self.model)
        alg.distributed = distributed.world_size() > 1
        alg.rank, alg.world_size = distributed.rank(), distributed.world_size()
        from semilearn.algorithms.softmatch.utils import SoftMatchWeightingHook, concat_all_gather

        masking = alg.hooks_dict.get("MaskingHook")
        if alg.distributed and isinstance(masking, SoftMatchWeightingHook):
            # semilearn's SoftMatch hook calls `self.concat_all_gather`, a function it imports but never
            # makes a method, so USB's own distributed SoftMatch fails there too; give the hook that function.
            masking.concat_all_gather = concat_all_gather

    def fit(self) -> Trained:
        self._distribute()
        loop = TrainingLoop(self.model, self.cfg.train, self.ctx, self.data.val,
                            extra_state=self.state_dict, load_extra_state=self.load_state_dict)
        trained = loop.run(self.step)
        trained.info.update({"usb_algorithm": type(self.algorithm).__name__, "usb_warmup_iterations": self.warmup})
        return trained
