#!/usr/bin/env bash
# GPU check of the trainer's CUDA paths. First the figures of issue 14 (figures.json): the CE/L2 epoch ratio
# at batch 40 / 176 px (interleaved epochs), a 16,000-sample ECCV16 CE epoch with 8 loader workers and its
# MFU, and `--compile` vs eager step times at batch 40 and 8 (each with TFLOP/s and MFU). Then, as the budget
# allows, the older checks: bf16 autocast, channels-last, pinned memory and non-blocking copies, `fit` with a
# checkpoint and `fit --resume`, `colorize` and `evaluate` on CUDA, DDP (torchrun: 1 NCCL rank on the GPU,
# 2 gloo ranks on the CPU), and cudnn.benchmark on vs off. It ends with verdicts (verdicts.py).
#
#   1. Here, on the CPU box (builds the git-ignored data folder .gpu/ at the repo root; needs faiss):
#        bash tools/gpu_check/prepare.sh
#   2. On the device machine (repo root; the run tool's carry [".gpu"], timeout_s ~560):
#        bash tools/gpu_check/gpu_check.sh
#      Dry run here first (tiny sizes, --device cpu, faiss hidden; a few minutes on 2 busy cores, most of
#      it torch.compile's C++ builds):
#        bash tools/gpu_check/gpu_check.sh --dry-run        (the same as SMOKE=1)
#
# Time: ~8 min on one H100/H200 (the issue-14 figures ~5 min: a 16k-sample synthetic folder ~1 min, three
# epochs, two compiled step benches). Steps run in priority order. Each has a time cap; the whole script keeps
# to BUDGET (480) seconds: a step starts only with MIN_LEFT seconds left and is cut at what is left. A failing
# step never stops the next one. Files under $OUT (at most 8 come back): figures.json (the issue-14 figures
# with the card, driver and torch), summary.txt (one line per step: rc, seconds, the step's last JSON/summary
# line; then the verdicts), env.log, step.log, epoch.log (epochs and loader), fit.log, ddp.log,
# results.tar.gz (fit log.jsonl/config.json, colorized PNGs, metrics.md/json, GPU utilisation samples).
set -u
cd "$(dirname "$0")/../.."                # the repo root: cli.py, trainer/, .gpu/
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the repo is not pip-installed there: the helpers import trainer
SMOKE=${SMOKE:-0}
[ "${1:-}" = "--dry-run" ] && SMOKE=1
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
WORK=${WORK:-/tmp/gpu_check}
BUDGET=${BUDGET:-480}
MIN_LEFT=${MIN_LEFT:-20}
SHARDS=.gpu/shards_sample                  # `cli.py preprocess sample` output, built on the CPU box (needs faiss)
PHOTOS=.gpu/photos                         # astronaut, coffee, chelsea from scikit-image's bundled data

if [ "$SMOKE" = 1 ]; then                  # CPU dry run: same commands, sizes that take seconds on 2 cores
    [ -x .venv/bin/python ] && PY=${PY_SMOKE:-.venv/bin/python}
    export PYTHONPATH=$PWD/tools/gpu_check/nofaiss${PYTHONPATH:+:$PYTHONPATH}   # `import faiss` fails, as on the GPU box
    DEV=cpu; MODEL=tiny; BS=4; BS_SMALL=2; CROP=32; STEPS=2; WARM=1; N=64; N_BIG=96; EPOCH_WORKERS=1
    LOADER_WORKERS=0,1; LOADER_BATCHES=5; FIT_MODEL=tiny; FIT_STEPS=4; FIT_BS=4; DDP_BS=2; DDP_STEPS=2
    BUDGET=${SMOKE_BUDGET:-900}; COMPILE_CAP=400
else
    DEV=cuda; MODEL=eccv16; BS=40; BS_SMALL=8; CROP=176; STEPS=30; WARM=3; N=3000; N_BIG=16000; EPOCH_WORKERS=8
    LOADER_WORKERS=8,14; LOADER_BATCHES=300; FIT_MODEL=eccv16; FIT_STEPS=100; FIT_BS=8; DDP_BS=4; DDP_STEPS=20
    COMPILE_CAP=180
fi
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
T0=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LOG CAP CMD...: run CMD under `timeout`, its stdout+stderr appended to $OUT/LOG and kept in
# $WORK/NAME.out; one line to summary.txt with the exit status, the seconds and the last JSON line
# (else the last line) of the output.
step() {
    local name=$1 log=$2 cap=$3
    shift 3
    local left=$((BUDGET - (SECONDS - T0)))
    if [ "$left" -lt "$MIN_LEFT" ]; then
        note "$name SKIPPED (budget: ${left}s of ${BUDGET}s left)"
        return 0
    fi
    local t=$((cap < left ? cap : left)) s=$SECONDS rc
    echo "===== $name (timeout ${t}s, at +$((SECONDS - T0))s): $*" | tee -a "$OUT/$log"
    timeout -k 5 "$t" "$@" 2>&1 | tee "$WORK/$name.out" >>"$OUT/$log"
    rc=${PIPESTATUS[0]}
    local last
    last=$(grep -a '^{' "$WORK/$name.out" | tail -n 1)
    [ -n "$last" ] || last=$(tr '\r' '\n' <"$WORK/$name.out" | grep -av '^\s*$' | tail -n 1)
    if [ "$rc" = 0 ]; then note "$name ok $((SECONDS - s))s $last"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note "$name FAILED timeout after $((SECONDS - s))s (cap ${t}s): $last"
    else note "$name FAILED rc=$rc $((SECONDS - s))s: $last"; fi
    echo "===== $name rc=$rc in $((SECONDS - s))s" >>"$OUT/$log"
    return 0
}

# GPU utilisation sampled twice a second while a step runs (nvidia-smi only; absent on the CPU box).
UTIL_PID=
util_start() {
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv,noheader,nounits \
        -lms 500 >"$WORK/util_$1.csv" 2>/dev/null &
    UTIL_PID=$!
}
util_stop() {
    [ -n "$UTIL_PID" ] || return 0
    kill "$UTIL_PID" 2>/dev/null; wait "$UTIL_PID" 2>/dev/null; UTIL_PID=
    awk -F', ' -v n="$1" '$2 > 0 {b++; u += $2} $3 > m {m = $3} END {
        printf "%s gpu_util: %d samples with util > 0, mean util %.0f%% over them, max memory %d MiB\n",
               n, b, b ? u / b : 0, m}' "$WORK/util_$1.csv" | tee -a "$SUMMARY"
}

pack() {   # results.tar.gz: the small artefacts worth looking at (rewritten after each producing step)
    (cd "$WORK" && tar czf "$OUT/results.tar.gz" --ignore-failed-read \
        $(ls -d runs/*/log.jsonl runs/*/config.json colorized eval_images eval_data util_*.csv 2>/dev/null)) \
        2>/dev/null || true
}

note "gpu_check: SMOKE=$SMOKE DEV=$DEV MODEL=$MODEL BS=$BS CROP=$CROP N=$N budget ${BUDGET}s host $(uname -n) $(date -u +%FT%TZ)"
for d in "$SHARDS/manifest.json" "$PHOTOS"; do  # both come from prepare.sh and travel with carry [".gpu"]
    [ -e "$d" ] || note "gpu_check: $d is missing: run 'bash tools/gpu_check/prepare.sh' on the CPU box" \
        "and pass carry [\".gpu\"] to the device run; the steps that need it will fail"
done

# 1. The machine and the torch build.
step env env.log 40 bash -c "nvidia-smi || echo 'no nvidia-smi'; echo cores \$(nproc); free -g | head -2;
    df -h /tmp | tail -1; $PY tools/gpu_check/env_probe.py"

# 2. Issue 14, CE / L2 epoch ratio: one epoch per loss on N synthetic 256 px samples, interleaved in segments.
step synth epoch.log 120 $PY tools/gpu_check/make_synth.py "$WORK/synth" $N
EPOCH_DATA=(--n $N)
[ -f "$WORK/synth/manifest.json" ] && EPOCH_DATA=(--data "$WORK/synth")
util_start epoch
step epoch epoch.log 120 $PY cli.py bench epoch "${EPOCH_DATA[@]}" --model $MODEL --batch-size $BS --crop $CROP \
    --workers $EPOCH_WORKERS --device $DEV
util_stop epoch

# 3. Issue 14, a 16,000-sample ECCV16 CE epoch with 8 workers alone (no interleaving: the loader's real
#    pace), its MFU and the GPU utilisation meanwhile; then the loader alone on the same folder, which
#    tells whether it bounds the epoch.
step synth_big epoch.log 150 $PY tools/gpu_check/make_synth.py "$WORK/synth_big" $N_BIG
BIG_DATA=(--n $N_BIG)
[ -f "$WORK/synth_big/manifest.json" ] && BIG_DATA=(--data "$WORK/synth_big")
util_start epoch_big
step epoch_big epoch.log 120 $PY cli.py bench epoch "${BIG_DATA[@]}" --losses ce --model $MODEL --batch-size $BS \
    --crop $CROP --workers $EPOCH_WORKERS --device $DEV
util_stop epoch_big
LOADER_DATA=()
[ -f "$WORK/synth_big/manifest.json" ] && LOADER_DATA=(--data "$WORK/synth_big")
step loader epoch.log 60 $PY cli.py bench loader "${LOADER_DATA[@]}" --batch-size $BS --crop $CROP \
    --batches $LOADER_BATCHES --workers $LOADER_WORKERS

# 4. Issue 14, --compile vs eager: ce, l2, ce_compiled, l2_compiled interleaved, at batch 40 and 8.
step step_b$BS step.log $COMPILE_CAP $PY cli.py bench step --compile --model $MODEL --batch-size $BS --crop $CROP \
    --steps $STEPS --warmup $WARM --device $DEV
step step_b$BS_SMALL step.log $COMPILE_CAP $PY cli.py bench step --compile --model $MODEL --batch-size $BS_SMALL \
    --crop $CROP --steps $STEPS --warmup $WARM --device $DEV
$PY tools/gpu_check/figures.py "$WORK" "$OUT/figures.json" $BS $BS_SMALL 2>&1 | tee -a "$SUMMARY"

# 5. A real fit on the sample shards on CUDA (checkpoint mid-run and at the end), resume it, colorize
#    photos with it, evaluate it on photos and on the shards' test split.
RUN=$WORK/runs/fit_ce
step fit fit.log 90 bash -c "$PY cli.py fit --data $SHARDS --out $RUN --model $FIT_MODEL --loss ce --lr 1e-4 \
    --batch-size $FIT_BS --steps $FIT_STEPS --save-every $((FIT_STEPS / 2)) --workers 2 --device $DEV && \
    $PY tools/gpu_check/log_rows.py $RUN/log.jsonl"
step fit_resume fit.log 45 bash -c "$PY cli.py fit --data $SHARDS --out $RUN --model $FIT_MODEL --loss ce --lr 1e-4 \
    --batch-size $FIT_BS --steps $((FIT_STEPS + 10)) --save-every $((FIT_STEPS / 2)) --workers 2 --device $DEV --resume && \
    $PY tools/gpu_check/log_rows.py $RUN/log.jsonl"
pack
CKPT=$RUN/last.pt
step colorize fit.log 45 $PY cli.py colorize $PHOTOS --checkpoint $CKPT --out "$WORK/colorized" --device $DEV
step eval_images fit.log 60 $PY cli.py evaluate --checkpoint $CKPT --images $PHOTOS --out "$WORK/eval_images" \
    --device $DEV
step eval_data fit.log 45 $PY cli.py evaluate --checkpoint $CKPT --data $SHARDS --split test \
    --out "$WORK/eval_data" --device $DEV
pack

# 6. DDP: one process under torchrun on CUDA (NCCL process group, DDP wrapper, all_reduce on the GPU),
#    then two CPU processes with gloo. (Two NCCL ranks cannot share one GPU.)
TORCHRUN=($PY -m torch.distributed.run --standalone)
step ddp_nccl ddp.log 60 bash -c "${TORCHRUN[*]} --nproc-per-node 1 cli.py fit --data $SHARDS --out $WORK/runs/ddp_nccl \
    --model tiny --loss ce --batch-size $DDP_BS --steps $DDP_STEPS --workers 2 --device $DEV && \
    $PY tools/gpu_check/log_rows.py $WORK/runs/ddp_nccl/log.jsonl"
step ddp_gloo ddp.log 60 bash -c "${TORCHRUN[*]} --nproc-per-node 2 cli.py fit --data $SHARDS --out $WORK/runs/ddp_gloo \
    --model tiny --loss ce --batch-size 2 --steps $DDP_STEPS --workers 1 --device cpu && \
    $PY tools/gpu_check/log_rows.py $WORK/runs/ddp_gloo/log.jsonl"
pack

# 7. The realistic batch again with cudnn.benchmark on (autotuned convolutions): worth setting in fit?
step cudnnbench_b${BS} step.log 90 $PY tools/gpu_check/cudnn_bench.py bench step --model $MODEL --batch-size $BS \
    --crop $CROP --steps $STEPS --warmup $WARM --device $DEV

# Verdicts from the JSON lines: the issue-14 floors, CE/L2, loader faster than the GPU eats.
$PY tools/gpu_check/verdicts.py "$WORK" 2>&1 | tee -a "$SUMMARY"
note "gpu_check done in $((SECONDS - T0))s"
ls -la "$OUT"
