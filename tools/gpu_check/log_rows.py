"""RUN_DIR/log.jsonl -> one JSON line: rows; mean loss (and unweighted CE) over the first and the last
tenth of the rows (the weighted CE of one batch swings with its colours' rarity); steps/s of the last
process's rows after its first step (elapsed_s restarts when a run is resumed)."""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
k = max(1, len(rows) // 10)


def means(part):
    keys = [key for key in ("loss", "ce_unweighted") if key in part[0]]
    return {key: round(statistics.fmean(r[key] for r in part), 4) for key in keys} | {"steps": [part[0]["step"], part[-1]["step"]]}


seg = len(rows) - 1                                    # start of the last process's rows
while seg > 0 and rows[seg - 1]["elapsed_s"] < rows[seg]["elapsed_s"]:
    seg -= 1
span = rows[-1]["elapsed_s"] - rows[seg]["elapsed_s"]
print(json.dumps({"log": sys.argv[1], "rows": len(rows), "first": means(rows[:k]), "last": means(rows[-k:]),
                  "last_elapsed_s": rows[-1]["elapsed_s"],
                  "steps_s_after_first": round((len(rows) - 1 - seg) / span, 2) if span > 0 else None}))
