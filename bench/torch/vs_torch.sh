#!/bin/sh
# omnimoe against its PyTorch speed twin (issue 18), side by side in one run: the same
# model and global batch (default configs/bench-torch.yaml), omnimoe's training step
# (bench_train, MoE on, demo data) on 1 process x 1 thread, 1 process x 2 threads and
# 2 processes x 1 thread, and PyTorch's (bench/torch/torch_twin.py, random text) on 1 and
# 2 threads; REPEATS rounds, alternating, so load from other jobs hits all alike. Prints
# each setting's best tokens/s (batch x context / best step), the best of each side and
# their ratio (target >= 2.0), and 1 x 2 threads over 2 x 1 (target >= 0.9).
#
#   bench/torch/vs_torch.sh [-b BUILD_DIR] [-r REPEATS] [-s STEPS] [-c CONFIG]
#
# The environment passes through (OPENBLAS_CORETYPE). PyTorch 1.13 from Debian's
# python3-torch multiplies through OpenBLAS too.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build="$src/build"
repeats=2
steps=2
config="$src/configs/bench-torch.yaml"
while [ $# -gt 0 ]; do
    case "$1" in
    -b) build=$2; shift 2 ;;
    -r) repeats=$2; shift 2 ;;
    -s) steps=$2; shift 2 ;;
    -c) config=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "vs_torch.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
bench="$build/bench/train/bench_train"
omnimoe="$build/cli/omnimoe"
for f in "$bench" "$omnimoe"; do
    [ -x "$f" ] || { echo "vs_torch.sh: $f not built (cmake --build $build)" >&2; exit 2; }
done
python3 -c 'import torch, yaml' 2>/dev/null ||
    { echo "vs_torch.sh: needs python3-torch and python3-yaml (apt-get install)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/omni-vs-torch-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
"$omnimoe" data demo --out "$tmp/demo.h5" >/dev/null
mpi="mpirun --bind-to none"
[ "$(id -u)" = 0 ] && mpi="$mpi --allow-run-as-root"
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS

# best tokens/s of one run, from its RESULT line's step_best and the config's batch x context
positions=$(python3 -c "import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); print(c['data']['batch']*c['model']['context'])" "$config")
rate() { sed -n 's/^RESULT .*step_best=\([0-9.]*\) .*/\1/p' "$1" | awk -v n="$positions" '{ printf "%.0f", n / $1 }'; }
ours() { # NP THREADS
    $mpi -np "$1" "$bench" "$config" --data "$tmp/demo.h5" --steps "$steps" --warmup 1 \
        --set parallel.threads="$2" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
    rate "$tmp/out"
}
theirs() { # THREADS
    python3 "$here/torch_twin.py" "$config" --threads "$1" --steps "$steps" --warmup 1 \
        >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
    rate "$tmp/out"
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b > a) ? b : a }'; }

echo "vs_torch.sh: $(basename "$config") ($positions positions per step), $repeats rounds of" \
    "$steps timed steps, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
o11="" o12="" o21="" p1="" p2=""
i=1
while [ "$i" -le "$repeats" ]; do
    a=$(ours 1 1) && b=$(ours 1 2) && c=$(ours 2 1) && d=$(theirs 1) && e=$(theirs 2) ||
        { echo "vs_torch.sh: a run failed" >&2; exit 1; }
    echo "  round $i tokens/s: omnimoe 1x1 $a, 1x2 $b, 2x1 $c; PyTorch 1 thread $d, 2 threads $e"
    o11=$(max "$o11" "$a") o12=$(max "$o12" "$b") o21=$(max "$o21" "$c")
    p1=$(max "$p1" "$d") p2=$(max "$p2" "$e")
    i=$((i + 1))
done
ob=$(max "$(max "$o11" "$o12")" "$o21")
pb=$(max "$p1" "$p2")
echo "best tokens/s: omnimoe 1x1 $o11, 1x2 $o12, 2x1 $o21; PyTorch 1 thread $p1, 2 threads $p2"
awk -v a="$ob" -v b="$pb" 'BEGIN { printf "omnimoe / PyTorch (best of each): %d / %d = %.2f (target >= 2.0)\n", a, b, a / b }'
awk -v a="$o12" -v b="$o21" 'BEGIN { printf "1 process x 2 threads / 2 processes x 1 thread: %d / %d = %.2f (target >= 0.9)\n", a, b, a / b }'
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
