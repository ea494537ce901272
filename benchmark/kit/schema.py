"""The typed schema of a run's config: every key of a profile, with its type, default, allowed range and
meaning, in one place. A profile YAML (`configs/profiles/<name>.yaml`) is a small delta over
these defaults, which are the `quick` profile's values.

    cfg = checked(RunConfig, merged, source="--set")   # every key present and typed: cfg.train.lr

Why pydantic (v2): one declaration per key gives the type, the default, the range (`ge`, `le`, `Literal`)
and the meaning (`description`), and a refused value comes back as (key path, what is allowed, what was
given), which is exactly the one line a user needs. Dataclasses would need that checking written by
hand for every key. The validated object itself travels from the command line to the training loop
(`RunConfig`: a cell's whole config, `TrainConfig`: the loop's section, ...), so every floor reads typed
attributes and every default is written here alone; records store its plain form (`RunConfig.plain`).

A method's own keys (`cfg.method`) are declared beside the method (`methods/<family>/config.py`) and checked
when a cell's config is built (`benchmark.harness.config`); their values, each with its source, stay in the
method's YAML.
"""
from __future__ import annotations

import re
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, create_model, field_validator, model_serializer
from pydantic.fields import FieldInfo

from benchmark.kit.errors import ConfigError
from benchmark.kit.runtime import DEVICES

DATASETS = ("synthetic", "kvasir", "kvasir-v2", "paired")  # `data.name`: the embedded one, then the folders read

# `executor.cluster`: submitit's AutoExecutor cluster. `local` runs the very jobs `slurm` would submit as
# processes on this machine (all at once, without dependencies): a way to try the path without Slurm.
CLUSTERS = ("slurm", "local")


class Section(BaseModel):
    """A config section: unknown keys are refused, so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class SyntheticConfig(Section):
    """The embedded dataset's size, as scenes per class in each part: more validation and test scenes make
    the evaluation less noisy at no training cost (docs/protocol.md §5)."""

    train_per_class: int = Field(100, ge=1, description="training scenes per class (6 classes): few enough that every "
                                                         "label counts, so full supervision is the ceiling")
    val_per_class: int = Field(170, ge=1, description="validation scenes per class (1,020 images)")
    test_per_class: int = Field(500, ge=1, description="test scenes per class: 3,000 images, a binomial "
                                                        "standard deviation of at most 0.9 points")
    seed: int = Field(0, ge=0, description="seed of the scenes; run seeds change the split, not the images")


class DataConfig(Section):
    name: Literal[DATASETS] = Field("synthetic", description="dataset; `run --dataset` sets it per cell")
    root: str | None = Field(None, description="folder of a real dataset (kvasir, kvasir-v2, paired)")
    nbi: str = Field("spectral", description="NBI source: spectral | generator:PATH | paired (docs/data.md)")
    image_size: int = Field(64, ge=8, description="real datasets are resized to it; synthetic scenes rendered at it")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    split: list[float] = Field([0.6, 0.2, 0.2], min_length=3, max_length=3,
                               description="train / val / test proportions, stratified (paper Table I: 6:2:2); "
                                           "synthetic: its per-class counts instead")
    split_seed: int | None = Field(0, ge=0, description="seed of the train / val / test partition, fixed as in USB's "
                                                        "benchmarks; null: the run's seed")
    labeled_seed: int | None = Field(0, ge=0, description="seed of the labeled subsets, fixed as the partition (one "
                                                          "labeled subset per ratio, as the paper's one split; seeds vary "
                                                          "the training); null: the run's seed (docs/protocol.md §5)")
    include_labeled_in_unlabeled: bool = Field(
        True, description="the labeled images are unlabeled images too (USB's include_lb_to_ulb, its default)")

    @field_validator("nbi")
    @classmethod
    def _nbi(cls, value: str) -> str:
        if value in ("spectral", "paired") or (value.startswith("generator:") and len(value) > len("generator:")):
            return value
        raise ValueError("allowed: spectral, paired or generator:PATH")

    @field_validator("split")
    @classmethod
    def _split(cls, value: list[float]) -> list[float]:
        if min(value) <= 0:
            raise ValueError("allowed: three positive numbers, e.g. [0.6, 0.2, 0.2]")
        return value


class ModelConfig(Section):
    arch: str = Field("vit_tiny_patch16_224", description="timm model name")
    init: Literal["imagenet", "suite", "random"] = Field(
        "suite", description="starting weights: timm's ImageNet ones | the suite's label-free ones "
                             "(benchmark/weights/<profile>.pt) | none")
    weights: str | None = Field(None, description="a local weights file instead of the shipped / downloaded one")
    kwargs: dict[str, Any] = Field(
        {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0},
        description="passed to timm.create_model; quick: a small ViT for 2 CPU cores")
    mean: list[float] | None = Field(
        None, min_length=3, max_length=3, description="RGB mean inputs are normalised with; null: the starting "
        "weights' own (imagenet: timm's pretrained config of model.arch; suite, random: the suite's)")
    std: list[float] | None = Field(None, min_length=3, max_length=3,
                                    description="RGB standard deviation, likewise; null: the weights' own")

    @field_validator("std")
    @classmethod
    def _std(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and min(value) <= 0:
            raise ValueError("allowed: three positive numbers, or null")
        return value


class InitConfig(Section):
    """`init build`: the suite's label-free pre-training of the backbone (SimCLR on a generic corpus)."""

    iterations: int = Field(400, ge=1, description="pre-training steps")
    batch_size: int = Field(128, ge=1, description="pairs of views per step")
    lr: float = Field(0.001, gt=0.0, description="peak learning rate")
    min_lr: float = Field(0.00001, ge=0.0, description="end of the cosine decay")
    weight_decay: float = Field(0.05, ge=0.0, description="AdamW weight decay")
    warmup_iterations: int = Field(40, ge=0, description="linear warm-up steps")
    temperature: float = Field(0.2, gt=0.0, description="SimCLR's NT-Xent temperature")
    projection_dim: int = Field(128, ge=1, description="width of the projection head")
    seed: int = Field(0, ge=0, description="seed of the corpus and the pre-training")


class TimeConstants(Section):
    """Keys defined in iterations for a reference budget, scaled to a run's stage by `benchmark.kit.budget`."""

    stage: str = Field(description="the stage whose iterations they scale to: train, or a method's (pretrain, ...)")
    reference: int = Field(ge=1, description="the budget, in iterations, the values were defined for")
    keys: list[str] = Field(min_length=1, description="dotted keys: momenta or iteration counts")


class TrainConfig(Section):
    """The budget and optimisation shared by every method of a profile."""

    iterations: int = Field(900, ge=1, description="training steps (quick: the budget of the grid on 2 cores)")
    batch_size: int = Field(16, ge=1, description="labeled images per step (quick: 16, twice the updates of 32 for "
                                                  "the same images seen; docs/protocol.md §5)")
    uratio: int = Field(1, ge=1, description="unlabeled images per labeled image")
    eval_every: int = Field(300, ge=1, description="steps between validations (and one after the last)")
    eval_batch_size: int = Field(256, ge=1, description="images per batch when evaluating")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD's momentum (optimizer sgd only)")
    lr: float = Field(0.002, gt=0.0, description="peak learning rate (quick: chosen on the supervised bounds)")
    layer_decay: float = Field(1.0, gt=0.0, le=1.0, description="lr factor per block from the top (1: none)")
    min_lr: float = Field(0.000001, ge=0.0, description="end of the cosine decay")
    weight_decay: float = Field(0.0005, ge=0.0, description="decoupled weight decay (USB usb_cv)")
    warmup_iterations: int = Field(5120, ge=0, description="linear warm-up steps (USB usb_cv; budget-scaled)")
    ema_momentum: float = Field(0.99, ge=0.0, lt=1.0, description="EMA of the evaluated weights, 0 = none (usb_cv); "
                                                              "quick: a horizon of 100 per 450 steps, 200 of its 900 (budget-scaled)")
    probe_head: bool = Field(True, description="classifier heads start from a linear probe of their features on the "
                                                "labeled images (LP-FT; benchmark/kit/probe.py)")


class _Overlay(Section):
    """Dumps only the keys it was given: an absent key keeps the value of what it is laid over."""

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler) -> dict:
        return {key: value for key, value in handler(self).items() if value is not None}


def _overlay(schema: type[Section], name: str) -> type[Section]:
    """A schema with `schema`'s keys, each optional (default None) with its type and range."""
    fields = {key: (field.annotation | None, FieldInfo.merge_field_infos(field, default=None))
              for key, field in schema.model_fields.items()}
    return create_model(name, __base__=_Overlay, __doc__=f"Some keys of {schema.__name__}, laid over it.", **fields)


# Some keys of `train` laid over the profile's (MICS's fine-tuning); an absent key keeps the profile's.
TrainOverlay = _overlay(TrainConfig, "TrainOverlay")


class RuntimeConfig(Section):
    device: Literal[DEVICES] = Field("auto", description="auto picks CUDA when present")
    amp: Literal["auto"] | bool = Field("auto", description="mixed precision; auto = on for CUDA, off on CPU")
    amp_dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto", description="autocast dtype under amp; auto: float16 on CUDA (with loss scaling), bfloat16 on CPU")
    threads: int = Field(1, ge=0, description="torch CPU threads of a cell: 1 runs one cell per core and gives the "
                                               "same record on any machine; 0 = every core (one cell at a time)")
    compile: bool = Field(False, description="torch.compile each transformer block (worth it on CUDA; docs/perf.md)")
    save_model: bool = Field(False, description="also keep the selected model's weights, model.pt (nothing in the "
                                                "suite reads them; ViT-B/16: 343 MB a single-encoder cell)")


class ExecutorConfig(Section):
    """`run --executor slurm` (docs/scale-out.md): where a cell runs, not what it computes."""

    partition: str | None = Field(None, description="null: the cluster's default partition")
    time_min: int = Field(60, ge=1, description="time limit of one job (one cell), minutes")
    gpus_per_job: int = Field(0, ge=0, description="GPUs per job")
    cpus_per_job: int = Field(2, ge=1, description="CPU cores per job")
    mem_gb: float = Field(8, gt=0, description="memory per job, GB")
    array_parallelism: int = Field(32, ge=1, description="at most this many jobs of one job array at once")
    sbatch: dict[str, Any] = Field({}, description="any other sbatch option, e.g. {account: proj, qos: normal}")
    cluster: Literal[CLUSTERS] = Field("slurm", description="local: the same jobs as processes here, without Slurm")


class ProfileConfig(Section):
    """What a profile YAML may set."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig | None = Field(default_factory=InitConfig, description="null: nothing for `init build`")
    train: TrainConfig = Field(default_factory=TrainConfig)
    time_constants: list[TimeConstants] = Field(
        [TimeConstants(stage="train", reference=204800, keys=["train.warmup_iterations"]),
         TimeConstants(stage="train", reference=450, keys=["train.ema_momentum"])],
        description="the profile's time constants: the lr warm-up, defined for usb_cv's 204,800 iterations, and the "
                    "evaluated weights' EMA, defined as a horizon of 100 steps in 450")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)


class RunConfig(ProfileConfig):
    """A cell's effective config, the one object every floor reads (`cfg.train.lr`, `cfg.method.T`): the
    profile's sections, the method's own keys (an instance of the schema its family registered), the cell's
    coordinates, and, once the runner has scaled the time constants to the run (`benchmark.kit.budget`),
    what it changed."""

    method: SerializeAsAny[Section] = Field(description="the method's own keys: its family's schema")
    profile: str = Field(description="the profile the config was built from")
    seed: int = Field(ge=0, description="the run's seed")
    labels: float = Field(description="label ratio, percent")
    budget: dict[str, Any] | None = Field(None, description="the time constants scaled to this run; set by the runner")

    def plain(self) -> dict:
        """What the run computes, as plain data: a record's `config`, and what its hash is computed from. Where
        it runs (`executor`: a partition or a time limit re-runs nothing) and a budget not yet applied are left
        out."""
        return self.model_dump(exclude={"executor", "budget"} if self.budget is None else {"executor"})


_TYPE_TAGS = {"bool", "int", "float", "str", "none", "dict", "list"}


def _key(loc: tuple, prefix: str) -> str:
    """The dotted key of an error's location, without the union branch tags pydantic adds (`literal['auto']`)."""
    parts = [str(p) for p in loc if isinstance(p, int) or (re.fullmatch(r"[A-Za-z_]\w*", p) and p not in _TYPE_TAGS)]
    return ".".join(p for p in (prefix, *parts) if p)


def _message(err: ValidationError, source: str, prefix: str = "") -> str:
    """The first error as one line: where it came from, the key, what is allowed (every branch of a union),
    what was given."""
    errors = err.errors()
    key = _key(errors[0]["loc"], prefix)
    if errors[0]["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    allowed = []
    for e in errors:
        if _key(e["loc"], prefix) == key:
            msg = e["msg"].removeprefix("Value error, ")
            allowed.append(msg[0].lower() + msg[1:])
    return f"{source}: bad value {errors[0]['input']!r} for {key}: {'; or '.join(dict.fromkeys(allowed))}"


def validate(schema: type[BaseModel], values: dict, source: str, prefix: str = "") -> dict:
    """`values` checked against `schema`, defaults filled in, as a plain dict; else a one-line ConfigError."""
    return checked(schema, values, source, prefix).model_dump(exclude_none=False)


def checked(schema: type[BaseModel], values: dict, source: str, prefix: str = "") -> BaseModel:
    """`values` checked against `schema`, defaults filled in, as the schema's object; else a one-line
    ConfigError."""
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_message(err, source, prefix)) from None


def defaults() -> dict:
    """Every profile key at its default."""
    return ProfileConfig().model_dump()


def _type_name(annotation: Any) -> str:
    """`int`, `int | None`, `list[float]`, `auto | cpu | cuda` (a Literal's values), `auto | bool`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return annotation.__name__


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (`InitConfig` of `InitConfig | None`), None for a value or a list of them."""
    if get_origin(annotation) is list:
        return None
    nested = [a for a in (get_args(annotation) or (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return nested[0] if nested else None


def declared(schema: type[BaseModel], key: str) -> type[BaseModel] | bool:
    """Whether dotted `key` is one of `schema`'s keys, as `describe` lists them: its section when it names
    one, True for a value, False when it is none of them."""
    for i, part in enumerate(key.split(".")):
        field = schema.model_fields.get(part)
        if field is None:
            return False
        nested = _nested(field.annotation)
        if nested is None:
            return i == len(key.split(".")) - 1
        schema = nested
    return schema


def describe(schema: type[BaseModel] = ProfileConfig, prefix: str = "", values: dict | None = None) -> list[str]:
    """One line per key: `key: type = default (range)  # meaning`, for `config keys`. `values`: what to show
    instead of the schema's defaults (a method's, which its YAML holds)."""
    lines = []
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = _nested(annotation)
        if nested is not None:
            lines += describe(nested, key + ".", None if values is None else (values.get(name) or {}))
            continue
        if values is not None and name in values:
            default = repr(values[name])
        else:
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        bounds = ", ".join(f"{symbol} {getattr(m, name)}" for m in field.metadata
                           for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                           if getattr(m, name, None) is not None)
        lines.append(f"{key}: {_type_name(annotation)} = {default}" + (f" ({bounds})" if bounds else "") +
                     (f"  # {field.description}" if field.description else ""))
    return lines
