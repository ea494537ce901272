"""`<reports>/perf.json`, the record of one `perf` run: where it lives, the figures derived from the measured
ones (the loader's consumers, the stages of a method with several training loops, the settings a step time
depends on), what the process and machine were doing, and the lines `perf` prints of it; read back by the
grid estimate (`benchmark.harness.estimate`)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil

import methods
from benchmark.kit.records import write_json_atomic
from benchmark.kit.schema import RunConfig

PERF_FILE = "perf.json"


def process_age_s() -> float:
    """Seconds since this process started: the start-up (interpreter, imports) a grid pays once."""
    return time.time() - psutil.Process(os.getpid()).create_time()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_record(reports: Path) -> dict | None:
    path = Path(reports) / PERF_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_record(record: dict, reports: Path) -> Path:
    path = Path(reports) / PERF_FILE
    write_json_atomic(path, record)
    return path


def consumed_img_s(method_figures: dict[str, dict], mode: str, images_per_step: int) -> float | None:
    """The fastest rate at which training in `mode` takes the loader's images: the loader's images per
    step over the quickest bare step (training with free data) among the methods that draw unlabeled
    batches in that mode (the supervised bounds draw labeled ones only)."""
    rates = [images_per_step / f["bare_step_s"] for key, f in method_figures.items()
             if key.split("/")[1] == mode and methods.get_method(key.split("/")[0]).unlabeled]
    return max(rates) if rates else None


def stage_figures(name: str, figures: dict) -> dict:
    """The stage costs of a method with several training loops (its `Cost` stages): each loop's step
    (wall, CPU, ours against bare) and each stage's once-per-run extra."""
    out = {}
    for stage in methods.get_method(name).cost.stages:
        loop = figures["loops"].get(stage.loop)
        if loop is not None:
            out[stage.loop] = {k: loop[k] for k in ("ours_step_s", "ours_cpu_step_s", "ours_img_s", "bare_img_s",
                                                    "overhead_ratio")}
        if stage.extra is not None and stage.extra in figures:
            out.setdefault(stage.loop, {})[stage.extra] = figures[stage.extra]
    return out


def step_settings(cfg: RunConfig) -> dict:
    """What a measured step time depends on beyond the method: the input size, the backbone and the batch."""
    return {"image_size": cfg.data.image_size, "arch": cfg.model.arch, "kwargs": cfg.model.kwargs,
            "batch_size": cfg.train.batch_size, "uratio": cfg.train.uratio}


# ----------------------------------------------------------------------------------- printing


def method_line(key: str, f: dict) -> str:
    ms = {k: 1000 * f[k] for k in ("ours_step_s", "ours_cpu_step_s", "bare_step_s", "bare_cpu_step_s")}
    path = f["device_path"]
    device = f"  {'amp' if path['amp'] else 'fp32'} {'/'.join(path['linear_dtypes'])}"
    if "peak_memory_mb" in path:
        syncs = max(path["host_syncs_per_step"].values(), default=0)
        device += f", peak {path['peak_memory_mb']:.0f} MB, {syncs:g} host syncs/step"
    return (f"{key:<22} ours {f['ours_img_s']:7.0f} img/s  bare {f['bare_img_s']:7.0f} img/s  "
            f"ratio {f['overhead_ratio']:5.2f}   step {ms['ours_step_s']:6.1f} ms (cpu {ms['ours_cpu_step_s']:6.1f}) "
            f"vs {ms['bare_step_s']:6.1f} ms (cpu {ms['bare_cpu_step_s']:6.1f})  {f['images_per_step']} img/step{device}")


def loader_line(mode: str, loader: dict) -> str:
    consumed = loader["consumed_img_s"]
    margin = f"{loader['img_s'] / consumed:.1f}x" if consumed else "n/a"
    return (f"loader {mode:<6} {loader['img_s']:7.0f} img/s delivered ({loader['images_per_step']} img/step, "
            f"{1000 * loader['step_s']:.1f} ms, cpu {1000 * loader['cpu_step_s']:.1f} ms); training consumes at most "
            f"{consumed or 0:.0f} img/s: {margin}")


def stages_line(key: str, stages: dict) -> str:
    parts = []
    for loop, f in stages.items():
        if "ours_step_s" in f:
            parts.append(f"{loop} step {1000 * f['ours_step_s']:.1f} ms (cpu {1000 * f['ours_cpu_step_s']:.1f}, "
                         f"ratio {f['overhead_ratio']:.2f})")
        parts += [f"{name} {value:.2f} s" for name, value in f.items() if name.endswith("_s") and "step" not in name]
    return f"{key} stages: " + ", ".join(parts)
