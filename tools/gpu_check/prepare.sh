#!/usr/bin/env bash
# Build the data gpu_check.sh reads, on the CPU box, into .gpu/ at the repo root (git-ignored, so the device
# run tool's carry [".gpu"] can ship it; ~3 MB):
#   .gpu/shards_sample/   `cli.py preprocess sample` (11 of scikit-image's bundled photos; needs faiss, which
#                         the GPU machine lacks, hence built here)
#   .gpu/photos/          astronaut.png, coffee.png, chelsea.png from skimage.data, for colorize / evaluate
# It adds /.gpu/ to .git/info/exclude when no ignore rule covers it yet. Rerunning it is cheap: preprocess
# keeps complete shards, and photos already there are kept.
# usage: bash tools/gpu_check/prepare.sh            (then, on the device: bash tools/gpu_check/gpu_check.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=.gpu

mkdir -p "$DATA"
if ! git check-ignore -q "$DATA/"; then    # carry only ships ignored paths; keep it out of `git status` too
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    echo "/$DATA/" >>"$exclude"
    echo "prepare: added /$DATA/ to $exclude"
fi

"$PY" cli.py preprocess sample --out "$DATA/shards_sample"

"$PY" - "$DATA/photos" <<'EOF'
import os
import sys

from PIL import Image
from skimage import data

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name in ("astronaut", "coffee", "chelsea"):
    path = os.path.join(out, name + ".png")
    if not os.path.exists(path):
        Image.fromarray(getattr(data, name)()).save(path)
print(f"prepare: {out}: {sorted(os.listdir(out))}")
EOF

du -sh "$DATA/shards_sample" "$DATA/photos"
echo "prepare: done; on the device run 'bash tools/gpu_check/gpu_check.sh' with carry [\".gpu\"]"
