#!/usr/bin/env bash
# Preprocessing on a many-core machine (the lent GPU host: 16 cores), told apart by where the time goes:
#   1. the disk's bandwidth for shard-sized files, buffered + fsync vs O_DIRECT (write_pattern.py), and tmpfs;
#   2. a per-task timeline of a real run against decode-only (timeline.py): main-process time before the
#      first task and after the last, gaps between a worker's tasks, the tail;
#   3. `bench preprocess` at 640x480 and 1024x768 with shards on the disk, and at 1024x768 on tmpfs.
# Source photos are generated into /dev/shm (all cores), so reading them costs the same on both sides.
#   device run tool: carry [".whl"] (the faiss-cpu wheel for the device's Python), timeout_s ~300:
#     bash tools/many_core/run.sh
#   dry run here: N=64 JOBS=2 DISK=artifacts/mc PY=.venv/bin/python bash tools/many_core/run.sh
# Files under $OUT: summary.txt (each step's last JSON line) and run.log (everything).
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
OUT=${OUT:-/tmp/many_core_out}; mkdir -p "$OUT"
LOG=$OUT/run.log; SUM=$OUT/summary.txt; : >"$SUM"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
PY=${PY:-python3}
N=${N:-2400}
JOBS=${JOBS:-$(nproc)}
DISK=${DISK:-/tmp/mc}; SHM=/dev/shm/mc
rm -rf "$DISK" "$SHM"; mkdir -p "$DISK" "$SHM"
step() {   # step NAME CAP CMD...: output to run.log, last JSON line (or last line) to summary.txt
    local name=$1 cap=$2; shift 2
    local s=$SECONDS
    echo "===== $name: $*" >>"$LOG"
    timeout -k 5 "$cap" "$@" >"$OUT/$name.out" 2>&1; local rc=$?
    cat "$OUT/$name.out" >>"$LOG"
    local last; last=$(grep -a '^{' "$OUT/$name.out" | tail -n 1)
    [ -n "$last" ] || last=$(tail -n 1 "$OUT/$name.out")
    echo "$name rc=$rc $((SECONDS - s))s $last" | tee -a "$SUM"
    rm -f "$OUT/$name.out"
}
{ nproc; lscpu | grep -E "Model name|Thread"; free -g | head -2; df -hT "$DISK" /dev/shm; } >>"$SUM" 2>&1
step photos_640 90 $PY tools/many_core/make_photos.py "$SHM/640x480" "$N" 640 480
step photos_1024 90 $PY tools/many_core/make_photos.py "$SHM/1024x768" "$N" 1024 768
step write_disk 60 $PY tools/many_core/write_pattern.py "$DISK/wp" --procs "$JOBS" --files 20
step write_shm 60 $PY tools/many_core/write_pattern.py "$SHM/wp" --procs "$JOBS" --files 20
for p in 640x480 1024x768; do
    step "timeline_$p" 120 $PY tools/many_core/timeline.py "$SHM/$p" --images "$N" --jobs "$JOBS" --out "$DISK"
done
B="$PY cli.py bench preprocess folder --images $N --jobs $JOBS"
step bench_640x480_disk 120 env TMPDIR="$DISK" $B --root "$SHM/640x480"
step bench_1024x768_disk 120 env TMPDIR="$DISK" $B --root "$SHM/1024x768"
step bench_1024x768_shm 120 env TMPDIR="$SHM" $B --root "$SHM/1024x768"
step bench_1024x768_disk_again 120 env TMPDIR="$DISK" $B --root "$SHM/1024x768"
rm -rf "$DISK" "$SHM"
