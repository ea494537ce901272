"""Training curves of a run: JSON lines beside the record, and TensorBoard events."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from benchmark.kit.files import atomic_write


class CurveWriter:
    """Appends `{"step", "name", "value"}` lines to `curves.jsonl` and scalars to TensorBoard.

    With a `logger`, every validation accuracy also goes to it, so a run's log file shows how
    training went without opening the curves."""

    def __init__(self, folder: Path, tensorboard: bool = True, logger: logging.Logger | None = None):
        self.path = Path(folder) / "curves.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logger
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for name, value in values.items():
                f.write(json.dumps({"step": step, "name": name, "value": value}) + "\n")
        if self._logger is not None:
            for name, value in values.items():
                if name.endswith("val_top1"):
                    self._logger.info("step %d: %s %.2f", step, name, value)
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, step)

    def rewind(self, loop: str, step: int) -> None:
        """Forget the lines of `loop` after `step`: a resumed run logs them again."""
        if not self.path.exists():
            return
        kept = [json.dumps(entry) for entry in _entries(self.path) if not _after(entry, loop, step)]
        with atomic_write(self.path) as tmp:  # a kill while rewinding must not lose the curve
            tmp.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _after(entry: dict, loop: str, step: int) -> bool:
    return entry["name"].startswith(loop + "/") and entry["step"] > step


def _entries(path: Path) -> list[dict]:
    """The parsed lines of a curve file; a torn last line (a kill in the middle of an append) is dropped."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def read_curves(folder: Path) -> list[dict]:
    path = Path(folder) / "curves.jsonl"
    return _entries(path) if path.exists() else []
