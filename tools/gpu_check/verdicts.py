"""Read the steps' last JSON lines (WORK/<step>.out) and print the issue-3 verdicts: CE/L2 <= 1.05, and
loader samples/s above what training consumes (the epoch's samples/s after its first step)."""
import glob
import os
import sys

import step_output   # beside this script

work = sys.argv[1]


def last_json(name):
    return step_output.last_json(work, name)


for path in sorted(glob.glob(os.path.join(work, "step_b*.out"))):
    name = os.path.basename(path)[:-4]
    s = last_json(name)
    if s:
        print(f"verdict {name}: ce {s['ce_step_s']} s, l2 {s['l2_step_s']} s, ratio {s['ratio']} (paired "
              f"{s['ratio_paired']}) -> {'PASS' if s['ratio_paired'] <= 1.05 else 'FAIL'} (<= 1.05); per-batch kNN "
              f"baseline {s['knn_baseline_step_s']} s = {s['knn_ratio']} x l2; ce trains "
              f"{s['batch_size'] / s['ce_step_s']:.0f} samples/s")
e, ld = last_json("epoch"), last_json("loader")
need = 0.0
if e:
    for loss in ("ce", "l2"):
        if f"{loss}_epoch_after_first_step_s" in e:
            rate = (e[f"{loss}_steps"] - 1) * e["batch_size"] / max(e[f"{loss}_epoch_after_first_step_s"], 1e-9)
            need = max(need, rate)
            print(f"verdict epoch {loss}: {e[f'{loss}_epoch_s']} s for {e[f'{loss}_steps']} steps, {rate:.0f} samples/s "
                  f"after the first step ({e['workers']} loader workers, {e.get('gpu', e['device'])})")
    if "ratio" in e:
        print(f"verdict epoch ce/l2: {e['ratio']} -> {'PASS' if e['ratio'] <= 1.05 else 'FAIL'} (<= 1.05)")
if ld:
    for w, r in ld["samples_s"].items():
        tail = f" vs {need:.0f} trained -> {'PASS' if r > need else 'FAIL'}" if need else ""
        print(f"verdict loader {w} workers: {r} samples/s{tail}")
