#!/usr/bin/env bash
# The routing study of docs/routing.md: every router of design.md §10 and a dense model with
# the same active parameters, trained on the same data (the demo's four tasks), the same
# steps, tokens and seeds; then the table (bench/routing/table.py), the task x expert figures
# (SVG, one per router) and one `omnimoe report` page of all runs.
#
#   bench/routing/study.sh [-b BUILD_DIR] [-o OUT_DIR] [-s STEPS] [-j JOBS] [-r "ROWS"] [-S "SEEDS"]
#                          [-T SPEED_STEPS]
#
# Defaults: build, runs/study, 160 steps, 3 runs at a time (one process each, 1 BLAS thread),
# rows = all of ROWS below, seeds "1 2". A run whose directory holds `done` is not run again
# (delete it, or the directory, to rerun); so an interrupted study continues where it stopped,
# and `-r dense -S 3` adds one run. The table is printed and written to OUT_DIR/table.md.
# Speed is measured apart, one run at a time: each row trains 10 and 10 + SPEED_STEPS (default
# 40; 0: skip) steps without evaluation, twice, rows alternating; tokens per CPU-second of the
# difference (so start-up and the final evaluation cancel, and the load of other jobs on a
# shared machine counts less than in wall time), the best of the two, in OUT_DIR/speed-ROW.txt.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build"
out="$src/runs/study"
steps=160
jobs=3
rows=""
seeds="1 2"
speed_steps=40
while [[ $# -gt 0 ]]; do
    case "$1" in
    -b) build=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    -s) steps=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -r) rows=$2; shift 2 ;;
    -S) seeds=$2; shift 2 ;;
    -T) speed_steps=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "study.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
omnimoe="$build/cli/omnimoe"
[[ -x "$omnimoe" ]] || { echo "study.sh: $omnimoe not found: build first (cmake --build $build)" >&2; exit 2; }

# Every row is the demo experiment (configs/demo.yaml: d_model 128, 4 blocks, every 2nd an MoE
# FFN; dense blocks d_ff 512) with these overrides, separated by ";". Active FFN parameters per token are equal
# in every row: top_k * expert_ff = 512 = the dense model's d_ff.
declare -A ROW=(
    [dense]="moe.every=0"
    [top1]="moe.top_k=1;moe.expert_ff=512"
    [top2]=""
    [top2-bias]="moe.aux_loss=0;moe.bias_rate=0.01"
    [expert-choice]="moe.router=expert_choice;moe.aux_loss=0;moe.capacity_factor=1.0"
    [task]="moe.router=task"
    [top2-entropy]="moe.entropy={local: 0.01, global: 0.02, threshold: 1.0}"
    [top2-dropless]="moe.capacity_factor=0"
    [top2-e8]="moe.num_experts=8"
)
ORDER="dense top1 top2 top2-bias expert-choice task top2-entropy top2-dropless top2-e8"
[[ -n "$rows" ]] || rows=$ORDER
for r in $rows; do [[ -v "ROW[$r]" ]] || { echo "study.sh: unknown row $r (rows: $ORDER)" >&2; exit 2; }; done

mkdir -p "$out"
data="$out/demo.h5"
# The study's four tasks: the demo has six since issue 17 (shapes_qa, gridworld); the table
# in docs/routing.md was measured on these four.
tasks="data.tasks={shapes: 1.0, tones: 1.0, arith: 1.0, cartpole: 1.0}"
[[ -f "$data" ]] || "$omnimoe" data demo --out "$data" >/dev/null

# Each run: one process, one BLAS thread; the final evaluation only (8 validation batches,
# 64 captions per *_to_text task for exact match, 5 cart-pole episodes of at most 200 steps).
run_one() {
    local name=$1 seed=$2 dir="$out/$1-s$2" sets=() kv
    [[ -f "$dir/done" ]] && return 0
    rm -rf "$dir"
    local IFS=';'
    for kv in ${ROW[$name]}; do sets+=(--set "$kv"); done
    IFS=$' \t\n'
    if "$omnimoe" train "$src/configs/demo.yaml" --set data.files="[$data]" --set "$tasks" \
        --set experiment.out_dir="$dir" --set experiment.seed="$seed" \
        --set optim.steps="$steps" --set optim.warmup=$((steps / 10)) \
        --set log.every=10 --set eval.every=0 --set eval.batches=8 --set eval.generate=64 \
        --set eval.episodes=5 --set eval.max_steps=200 --set checkpoint.every=0 \
        --set checkpoint.keep=1 --set parallel.threads=1 "${sets[@]}" >"$dir.log" 2>&1; then
        touch "$dir/done"
        echo "study: $name seed $seed done ($(grep -o '[0-9]* tok/s' "$dir.log" | tail -1))"
    else
        echo "study: $name seed $seed FAILED, see $dir.log" >&2
        return 1
    fi
}
export -f run_one
export out data steps omnimoe src
export ROW_DEFS="$(declare -p ROW)"
status=0
for seed in $seeds; do for r in $rows; do echo "$r $seed"; done; done |
    xargs -r -P "$jobs" -L 1 bash -c 'eval "$ROW_DEFS"; run_one "$0" "$1"' || status=1

# speed: CPU time of SPEED_STEPS training steps per row (the difference of two runs)
speed_one() {
    local name=$1 steps=$2 dir="$out/speed/$1-$2" sets=() kv
    local IFS=';'
    for kv in ${ROW[$name]}; do sets+=(--set "$kv"); done
    IFS=$' \t\n'
    rm -rf "$dir"
    /usr/bin/time -f "%U %S %e" -o "$dir.time" "$omnimoe" train "$src/configs/demo.yaml" \
        --set data.files="[$data]" --set "$tasks" --set experiment.out_dir="$dir" --set experiment.seed=1 \
        --set optim.steps="$steps" --set optim.warmup=5 --set log.every=10 --set eval.every=0 --set eval.batches=1 \
        --set eval.generate=0 --set eval.env='""' --set checkpoint.every=0 --set checkpoint.keep=1 \
        --set parallel.threads=1 "${sets[@]}" >"$dir.log" 2>&1 || return 1
    local tokens
    tokens=$(sed -n 's/^done: [0-9]* steps, \([0-9]*\) tokens$/\1/p' "$dir.log")
    echo "$tokens $(cat "$dir.time")"
}
if [[ "$speed_steps" -gt 0 ]]; then
    mkdir -p "$out/speed"
    for rep in 1 2; do
        order=$rows
        [[ $rep == 2 ]] && order=$(echo $rows | tr ' ' '\n' | tac | tr '\n' ' ')
        for r in $order; do
            a=$(speed_one "$r" 10) && b=$(speed_one "$r" $((10 + speed_steps))) || {
                echo "study: speed of $r FAILED, see $out/speed/" >&2; status=1; continue; }
            # tokens, user s, system s, wall s of each run -> tokens per CPU-second of the difference
            echo "$a $b" | awk '{ printf "%.1f %.4f\n", ($5 - $1) / (($6 + $7) - ($2 + $3)), ($8 - $4) }' \
                >>"$out/speed-$r.runs"
        done
    done
    for r in $rows; do
        [[ -f "$out/speed-$r.runs" ]] && sort -g -r "$out/speed-$r.runs" | head -1 >"$out/speed-$r.txt"
        rm -f "$out/speed-$r.runs"
    done
fi

python3 "$src/bench/routing/table.py" "$out" $ORDER | tee "$out/table.md"
mapfile -t reps < <(for r in $ORDER; do [[ -d "$out/$r-s1" && "$r" != dense ]] && echo "$out/$r-s1"; done)
if [[ ${#reps[@]} -gt 0 ]]; then
    "$omnimoe" report "${reps[@]}" --out "$out/report.html" >/dev/null && echo "study: $out/report.html"
fi
exit $status
