"""Generate N JPEGs the way `bench preprocess` does, on every core: python make_photos.py DIR N W H"""
import sys
from pathlib import Path

from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.bench import synth_jpegs  # noqa: E402

folder, n, w, h = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chunks = 32
Parallel(n_jobs=-1)(delayed(synth_jpegs)(folder / f"part{j:02d}", n // chunks, seed=j, w=w, h=h) for j in range(chunks))
print(folder, sum(1 for _ in folder.rglob("*.jpg")), "JPEGs")
