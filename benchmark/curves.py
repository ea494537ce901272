"""Training curves of a run: JSON lines beside the record, and TensorBoard events."""
from __future__ import annotations

import json
from pathlib import Path


class CurveWriter:
    """Appends `{"step", "name", "value"}` lines to `curves.jsonl` and scalars to TensorBoard."""

    def __init__(self, folder: Path, tensorboard: bool = True):
        self.path = Path(folder) / "curves.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for name, value in values.items():
                f.write(json.dumps({"step": step, "name": name, "value": value}) + "\n")
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, step)

    def rewind(self, loop: str, step: int) -> None:
        """Forget the lines of `loop` after `step`: a resumed run logs them again."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if not _after(json.loads(line), loop, step)]
        self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _after(entry: dict, loop: str, step: int) -> bool:
    return entry["name"].startswith(loop + "/") and entry["step"] > step


def read_curves(folder: Path) -> list[dict]:
    path = Path(folder) / "curves.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
