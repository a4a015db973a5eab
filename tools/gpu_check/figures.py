"""The issue-14 figures of one gpu_check.sh run, gathered into one JSON file (printed too, one line per figure).

usage: python3 tools/gpu_check/figures.py WORK OUT.json BS BS_SMALL
Reads the steps' last JSON lines (WORK/<step>.out: env, epoch, epoch_big, loader, step_b<BS>, step_b<BS_SMALL>)
and the GPU utilisation samples (WORK/util_epoch_big.csv). Floors from the issue: CE/L2 epoch <= 1.02; a 16k CE
epoch <= 5 s with MFU >= 0.38. `bound_by` is a reading of the figures, not a measurement: the loader when it
delivers fewer samples/s than the epoch needed for 5 s, else the host (launches, syncs) when the GPU sat idle
for more than a tenth of the samples, else the GPU's own arithmetic.
"""
import json
import os
import sys

import step_output   # beside this script

work, out, bs, bs_small = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def last_json(name):
    return step_output.last_json(work, name)


def util(name):
    try:
        rows = [ln.split(", ") for ln in open(os.path.join(work, f"util_{name}.csv")) if ln.strip()]
        u = [float(r[1]) for r in rows]
    except (OSError, ValueError, IndexError):
        return None
    busy = [x for x in u if x > 0]
    return {"samples": len(u), "mean_util_busy": round(sum(busy) / len(busy), 1) if busy else None,
            "share_idle": round(1 - len(busy) / len(u), 3) if u else None}


env, epoch, big, loader = (last_json(n) for n in ("env", "epoch", "epoch_big", "loader"))
fig = {"card": (env or {}).get("gpu"), "driver": (env or {}).get("driver"), "torch": (env or {}).get("torch"),
       "cuda": (env or {}).get("cuda"), "cudnn": (env or {}).get("cudnn")}
if epoch and "ratio" in epoch:
    fig["epoch_ce_l2"] = {"ratio": epoch["ratio"], "floor": 1.02, "pass": epoch["ratio"] <= 1.02,
                          **{k: epoch.get(k) for k in ("batch_size", "crop", "samples", "workers", "order",
                                                        "ce_epoch_after_first_step_s", "l2_epoch_after_first_step_s",
                                                        "ce_tflops", "ce_mfu", "l2_tflops", "l2_mfu")}}
if big and "ce_epoch_after_first_step_s" in big:
    s, mfu = big["ce_epoch_after_first_step_s"], big["ce_mfu"]
    need = big["samples"] / 5.0                                       # samples/s for the 5 s floor
    fed = (loader or {}).get("samples_s", {}).get(str(big["workers"]))
    u = util("epoch_big")
    if fed is not None and fed < need:
        bound = f"loader ({fed} samples/s at {big['workers']} workers < {need:.0f} needed)"
    elif u and u["share_idle"] is not None and u["share_idle"] > 0.1:
        bound = f"host or loader gaps (GPU idle in {u['share_idle']:.0%} of the utilisation samples)"
    else:
        bound = f"GPU arithmetic (MFU {mfu})"
    fig["epoch_16k_ce"] = {"samples": big["samples"], "workers": big["workers"], "epoch_s": big["ce_epoch_s"],
                           "after_first_step_s": s, "floor_s": 5.0, "tflops": big["ce_tflops"], "mfu": mfu,
                           "mfu_floor": 0.38, "pass": s <= 5.0 and (mfu or 0) >= 0.38,
                           "samples_s": big["ce_samples_s"], "loader_samples_s": fed, "gpu_util": u,
                           "bound_by": None if s <= 5.0 and (mfu or 0) >= 0.38 else bound}
for b in (bs, bs_small):
    st = last_json(f"step_b{b}")
    if st and "ce_compiled_step_s" in st:
        fig[f"compile_b{b}"] = {k: st.get(k) for k in (
            "ce_step_s", "ce_compiled_step_s", "ce_compile_speedup", "l2_step_s", "l2_compiled_step_s",
            "l2_compile_speedup", "ratio_paired", "ce_tflops", "ce_mfu", "ce_compiled_tflops", "ce_compiled_mfu",
            "peak_tflops", "steps")}
with open(out, "w") as f:
    json.dump(fig, f, indent=1)
for k, v in fig.items():
    print(f"figure {k}: {json.dumps(v)}")
