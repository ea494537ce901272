#!/usr/bin/env bash
# The GPU check (docs/perf.md, "The GPU check"): every method family for a few dozen steps of the paper profile's
# ViT-B/16 at 256 px, random weights, mixed precision, on synthetic images (no download, no dataset needed); it
# prints images per second, peak GPU memory and host syncs per method, checks the CUDA path, and estimates the
# paper grids (Table II on Kvasir-v2, Tables III-IV) from the measured steps. Exit 1 when the CUDA path is not
# the one meant. Without a GPU the same measurement runs at smoke size on the CPU (what the tests run).
# Extra arguments go to `perf`, e.g. --method fixmatch,mics or --steps 48.
set -euo pipefail
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    exec python -m benchmark perf --profile paper --device cuda --dataset synthetic --estimate-dataset kvasir-v2 \
        --steps 24 --set model.init=random --set runtime.amp=true \
        --set data.synthetic.train_per_class=16 --set data.synthetic.val_per_class=8 --set data.synthetic.test_per_class=8 "$@"
fi
exec python -m benchmark perf --profile smoke --device cpu --estimate-dataset kvasir-v2 --steps 4 "$@"
