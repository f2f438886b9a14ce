#!/usr/bin/env bash
# Where capacity drops land (docs/routing.md): the study's top-2 row (capacity factor 1.25,
# per worker) trained for STEPS steps on 1, 2 and 4 processes — the same global batches, so
# the same tokens — and the share of each task's assignments dropped, from metrics.jsonl.
#
#   bench/routing/drops.sh [-b BUILD_DIR] [-o OUT_DIR] [-s STEPS] [-c CAPACITY_FACTOR]
#
# Defaults: build, runs/drops, 40 steps, 1.25. Prints one line per process count.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build"
out="$src/runs/drops"
steps=40
cf=1.25
while [[ $# -gt 0 ]]; do
    case "$1" in
    -b) build=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    -s) steps=$2; shift 2 ;;
    -c) cf=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "drops.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
omnimoe="$build/cli/omnimoe"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
data="$out/demo.h5"
[[ -f "$data" ]] || "$omnimoe" data demo --out "$data" >/dev/null
for np in 1 2 4; do
    dir="$out/np$np"
    rm -rf "$dir"
    mpirun -np $np --oversubscribe --bind-to none "$omnimoe" train "$src/configs/demo.yaml" \
        --set data.files="[$data]" --set experiment.out_dir="$dir" --set optim.steps="$steps" \
        --set optim.warmup=$((steps / 10)) --set log.every=10 --set eval.every=0 \
        --set eval.batches=1 --set eval.generate=0 --set eval.env='""' --set checkpoint.every=0 \
        --set moe.capacity_factor="$cf" --set parallel.threads=1 >"$dir.log" 2>&1 ||
        { echo "drops.sh: $np processes failed, see $dir.log" >&2; exit 1; }
    python3 - "$dir/metrics.jsonl" "$np" <<'PY'
import json, sys
kept, drop = {}, {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o.get("eval"):
        continue
    for lk, ld in zip(o["task_expert_load"], o["task_expert_drop"]):
        for t in lk:
            kept[t] = kept.get(t, 0) + sum(lk[t])
            drop[t] = drop.get(t, 0) + sum(ld[t])
tot = sum(drop.values()) / (sum(kept.values()) + sum(drop.values()))
per = "  ".join(f"{t} {100 * drop[t] / (kept[t] + drop[t]):5.2f}%" for t in kept)
print(f"{sys.argv[2]} process(es): dropped {100 * tot:5.2f}% of assignments | by task: {per}")
PY
done
