"""Preprocessing from archives (ImageNet-shaped tars, a COCO zip) against the extracted files; listing a tar.

    python tools/archive_bench.py [N_IMAGES] [JOBS]        (defaults 768 and 2)

Writes N 500x375 JPEGs (pipeline.bench.synth_jpegs) as train/nXXXXXXXX/*.JPEG, the same as a nested
ILSVRC2012_img_train.tar, preprocesses both (after a warm-up run that starts the worker pool; alternating, 3 times
each, fresh output folders) and prints img/s of each and their ratio; the same for COCO's train2017.zip (deflated,
read in place) against its unzipped folder; then lists a nested tar of 50 classes x 1,300 members (the headers only)
and prints the microseconds per member, and what that makes for ImageNet's 1,281,167 training images, the first time
and again from the cached listing (pipeline.archives, kept in a temporary cache here). One JSON line at the end.
"""
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.archives import nested_tar_members  # noqa: E402
from pipeline.bench import synth_jpegs  # noqa: E402
from pipeline.config import PrepConfig  # noqa: E402
from pipeline.datasets import list_dataset  # noqa: E402
from pipeline.preprocess import run  # noqa: E402

IMAGENET_TRAIN = 1_281_167


def _tar_of(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    buf.seek(0)
    return buf


def _write_nested(path: Path, classes: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as outer:
        for wnid, members in classes.items():
            inner = _tar_of(members)
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = len(inner.getbuffer())
            outer.addfile(info, inner)


def main(n: int, jobs: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="archive_bench_"))
    os.environ["COLORFAST_CACHE"] = str(work / "cache")      # listings cached here, not in the user's cache
    try:
        src = synth_jpegs(work / "src", n, w=500, h=375)
        classes: dict[str, dict[str, bytes]] = {}
        for i, folder in enumerate(sorted(p for p in src.iterdir() if p.is_dir())):
            wnid = f"n{i:08d}"
            classes[wnid] = {f"{wnid}_{f.stem}.JPEG": f.read_bytes() for f in sorted(folder.glob("*.jpg"))}
        tree, tars = work / "tree", work / "tars"
        for wnid, members in classes.items():
            (tree / "train" / wnid).mkdir(parents=True)
            for name, payload in members.items():
                (tree / "train" / wnid / name).write_bytes(payload)
        tars.mkdir()
        _write_nested(tars / "ILSVRC2012_img_train.tar", classes)
        run(PrepConfig(dataset="imagenet", root=str(tree), out_dir=str(work / "warm"), jobs=jobs, limit=4 * jobs),
            progress=False)                              # starts the worker pool, which later runs reuse
        rates: dict[str, list[float]] = {"tree": [], "tars": []}
        for rep in range(3):
            for side, root in (("tree", tree), ("tars", tars)):
                out = work / f"out_{side}_{rep}"
                t = time.perf_counter()
                r = run(PrepConfig(dataset="imagenet", root=str(root), out_dir=str(out), jobs=jobs), progress=False)
                rates[side].append(r.seen / (time.perf_counter() - t))
                shutil.rmtree(out)
        coco_tree, coco_zip = work / "coco_tree", work / "coco_zip"           # COCO's layout: train2017.zip, deflated
        coco_zip.mkdir()
        with zipfile.ZipFile(coco_zip / "train2017.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
            for i, f in enumerate(sorted(src.rglob("*.jpg"))):
                (coco_tree / "train2017").mkdir(parents=True, exist_ok=True)
                (coco_tree / "train2017" / f"{i:012d}.jpg").write_bytes(f.read_bytes())
                z.write(f, f"train2017/{i:012d}.jpg")
        for rep in range(3):
            for side, root in (("coco_tree", coco_tree), ("coco_zip", coco_zip)):
                out = work / f"out_{side}_{rep}"
                t = time.perf_counter()
                r = run(PrepConfig(dataset="coco", root=str(root), out_dir=str(out), jobs=jobs), progress=False)
                rates.setdefault(side, []).append(r.seen / (time.perf_counter() - t))
                shutil.rmtree(out)
        t = time.perf_counter()
        listed = len(list_dataset("imagenet", str(tars)).items)
        list_small = time.perf_counter() - t

        big = work / "big_train.tar"                    # headers are what listing reads: tiny members suffice
        _write_nested(big, {f"n{c:08d}": {f"n{c:08d}_{j}.JPEG": b"x" * 2000 for j in range(1300)} for c in range(50)})
        t = time.perf_counter()
        members = sum(1 for _ in nested_tar_members(str(big)))
        per_member = (time.perf_counter() - t) / members           # parsing the headers, then caching the listing
        t = time.perf_counter()
        assert sum(1 for _ in nested_tar_members(str(big))) == members
        per_member_cached = (time.perf_counter() - t) / members    # a rerun: the cached listing
        tree_rate, tar_rate = max(rates["tree"]), max(rates["tars"])
        return {"images": n, "jobs": jobs, "tree_img_s": [round(x, 1) for x in rates["tree"]],
                "tars_img_s": [round(x, 1) for x in rates["tars"]], "tars_over_tree": round(tar_rate / tree_rate, 3),
                "coco_tree_img_s": [round(x, 1) for x in rates["coco_tree"]],
                "coco_zip_img_s": [round(x, 1) for x in rates["coco_zip"]],
                "zip_over_tree": round(max(rates["coco_zip"]) / max(rates["coco_tree"]), 3),
                "list_s": round(list_small, 3), "listed": listed, "list_us_per_member": round(per_member * 1e6, 1),
                "imagenet_train_list_s": round(per_member * IMAGENET_TRAIN, 1),
                "list_cached_us_per_member": round(per_member_cached * 1e6, 2),
                "imagenet_train_list_cached_s": round(per_member_cached * IMAGENET_TRAIN, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*(args + [768, 2][len(args):]))
    print(json.dumps(result))
