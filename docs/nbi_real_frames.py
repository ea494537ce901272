"""The figure and the numbers of docs/data.md, "The spectral NBI on real frames".

    python docs/nbi_real_frames.py [--frames DIR] [--out docs/nbi_real_frames.png] [--columns 4]

Reads the real white-light frames (*.jpg, all of one size) in DIR (default: $MICS_BENCH_REAL_FRAMES, else
../shared/data/real-wli-polyps beside the checkout), prints the mean level (0-255) and the share of
pixels with a channel >= 250 of the WLI frames and of two NBI renderings of them, and writes a PNG with
one column per frame (evenly spread over the sorted files) and three rows: the WLI frame; the NBI that
the synthetic renderer's processor (`compose_nbi`) makes of its band estimates, which `simulate_nbi`
used before `SIMULATION_VERSION` 2; and `simulate_nbi` now.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmark.kit.data.spectral import compose_nbi, estimate_bands, simulate_nbi

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = Path(os.environ.get("MICS_BENCH_REAL_FRAMES") or REPO.parent / "shared" / "data" / "real-wli-polyps")
ROWS = ("WLI", "NBI, compose_nbi", "NBI, simulate_nbi")
LABEL_HEIGHT = 14


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of real WLI .jpg frames")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "nbi_real_frames.png", help="PNG to write")
    parser.add_argument("--columns", type=int, default=4, help="frames shown in the figure")
    args = parser.parse_args()
    files = sorted(args.frames.glob("*.jpg")) if args.frames.is_dir() else []
    if not files or args.columns < 1:
        print(f"error: {'--columns must be at least 1' if files else f'no .jpg frames in {args.frames}'}",
              file=sys.stderr)
        return 2
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if len({image.shape for image in images}) > 1:
        print(f"error: the frames in {args.frames} differ in size; resize them to one size", file=sys.stderr)
        return 2
    wli = np.stack(images)
    rows = (wli, compose_nbi(*estimate_bands(wli)), simulate_nbi(wli))
    print(f"{len(wli)} frames of {wli.shape[1]}x{wli.shape[2]} from {args.frames}")
    for name, row in zip(ROWS, rows):
        clipped = 100.0 * (row >= 250).any(axis=-1).mean()
        print(f"{name:18s} mean level {row.mean():6.1f}   pixels with a channel >= 250: {clipped:5.1f} %")
    picks = np.unique(np.linspace(0, len(wli) - 1, min(args.columns, len(wli))).round().astype(int))
    figure = Image.fromarray(np.concatenate([_labelled(name, np.concatenate(row[picks], axis=1))
                                             for name, row in zip(ROWS, rows)]))
    figure.save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} (frames {', '.join(files[i].stem for i in picks)})")
    return 0


def _labelled(name: str, strip: np.ndarray) -> np.ndarray:
    """`strip` under a white band naming it."""
    band = Image.new("RGB", (strip.shape[1], LABEL_HEIGHT), "white")
    ImageDraw.Draw(band).text((4, 1), name, fill="black")
    return np.concatenate([np.asarray(band), strip])


if __name__ == "__main__":
    sys.exit(main())
