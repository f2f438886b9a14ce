#!/bin/sh
# omnimoe against its PyTorch speed twin (issue 18), side by side in one run: the same
# model and global batch (default configs/bench-torch.yaml), omnimoe's training step
# (bench_train, MoE on, demo data) on 1 process x 1 thread, 1 process x 2 threads and
# 2 processes x 1 thread, and PyTorch's (bench/torch/torch_twin.py, random text) at every
# thread setting of SETTINGS; REPEATS rounds, alternating, so load from other jobs hits all
# alike. Prints each setting's best tokens/s (batch x context / best step), the best of
# each side (and PyTorch's winning setting) and their ratio (target >= 2.0), and 1 x 2
# threads over 2 x 1 (target >= 0.9).
#
#   bench/torch/vs_torch.sh [-b BUILD_DIR] [-r REPEATS] [-s STEPS] [-c CONFIG] [-t SETTINGS]
#
# SETTINGS: PyTorch's thread settings, space-separated INTRA:BLAS[:passive] (intra-op
# threads = torch.set_num_threads and OMP_NUM_THREADS; BLAS = OPENBLAS_NUM_THREADS; passive
# = OMP_WAIT_POLICY=PASSIVE); default "1:1 1:2 2:1 2:2 2:2:passive". PyTorch 1.13 from
# Debian's python3-torch multiplies through OpenBLAS's pthread build, whose threads are
# its own: OPENBLAS_NUM_THREADS, not torch.set_num_threads, sets them. The first of
# $PYTHON, python3 and /usr/bin/python3 that imports torch and yaml runs the twin. The
# environment passes through (OPENBLAS_CORETYPE: set it to compare PyTorch's kernels).
set -eu

me=vs_torch.sh opts="brsct" help="2,19"
repeats=2 steps=2 threads="1:1 1:2 2:1 2:2 2:2:passive"
. "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
bench_parse "$@"
settings=$threads

py=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch, yaml' 2>/dev/null; then
        py=$(command -v "$p")
        break
    fi
done
[ -n "$py" ] || bench_die "no python3 here imports torch and yaml (apt-get install python3-torch python3-yaml)"
for s in $settings; do
    case "$s" in
    [0-9]*:[0-9]* | [0-9]*:[0-9]*:passive) ;;
    *) bench_die "a PyTorch setting is INTRA:BLAS or INTRA:BLAS:passive, not $s" ;;
    esac
done
bench_setup omni-vs-torch
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS OMP_WAIT_POLICY

# best tokens/s of one run, from its RESULT line's step_best and the config's batch x context
positions=$("$py" -c "import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); print(c['data']['batch']*c['model']['context'])" "$config")
rate() { field "$1" step_best | awk -v n="$positions" '{ printf "%.0f", n / $1 }'; }
ours() { # NP THREADS
    $mpi -np "$1" "$bench" "$config" --data "$tmp/demo.h5" --steps "$steps" --warmup 1 \
        --set parallel.threads="$2" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
    rate "$tmp/out"
}
theirs() { # INTRA:BLAS[:passive]
    t=${1%%:*} rest=${1#*:}
    b=${rest%%:*}
    wait=""
    [ "${rest#*:}" = passive ] && wait=OMP_WAIT_POLICY=PASSIVE
    env OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$b" $wait \
        "$py" "$here/torch_twin.py" "$config" --threads "$t" --steps "$steps" --warmup 1 \
        >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
    rate "$tmp/out"
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b > a) ? b : a }'; }
key() { echo "$1" | tr ':' '_'; } # a setting as a shell-variable suffix

echo "$me: $(basename "$config") ($positions positions per step), $repeats rounds of" \
    "$steps timed steps, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $py" \
    "(torch $("$py" -c 'import torch; print(torch.__version__)')), load average $(load)"
o11="" o12="" o21=""
i=1
while [ "$i" -le "$repeats" ]; do
    a=$(ours 1 1) && b=$(ours 1 2) && c=$(ours 2 1) || bench_die "an omnimoe run failed" 1
    line="  round $i tokens/s: omnimoe 1x1 $a, 1x2 $b, 2x1 $c; PyTorch"
    for s in $settings; do
        r=$(theirs "$s") || bench_die "a PyTorch run ($s) failed" 1
        eval "best_$(key "$s")=\$(max \"\${best_$(key "$s"):-}\" \"\$r\")"
        line="$line $s $r,"
    done
    echo "${line%,} (load $(load))"
    o11=$(max "$o11" "$a") o12=$(max "$o12" "$b") o21=$(max "$o21" "$c")
    i=$((i + 1))
done
ob=$(max "$(max "$o11" "$o12")" "$o21")
pb="" pwin="" line=""
for s in $settings; do
    eval "r=\$best_$(key "$s")"
    line="$line $s $r,"
    [ "$(max "$pb" "$r")" = "$r" ] && [ "$r" != "$pb" ] && pb=$r pwin=$s
done
echo "best tokens/s: omnimoe 1x1 $o11, 1x2 $o12, 2x1 $o21; PyTorch (intra-op:BLAS threads)${line%,}"
echo "PyTorch's best setting: $pwin (torch.set_num_threads and OMP_NUM_THREADS ${pwin%%:*}," \
    "OPENBLAS_NUM_THREADS $(echo "$pwin" | cut -d: -f2)$(case "$pwin" in *passive) echo ", OMP_WAIT_POLICY=PASSIVE" ;; esac))"
awk -v a="$ob" -v b="$pb" 'BEGIN { printf "omnimoe / PyTorch (best of each): %d / %d = %.2f (target >= 2.0)\n", a, b, a / b }'
awk -v a="$o12" -v b="$o21" 'BEGIN { printf "1 process x 2 threads / 2 processes x 1 thread: %d / %d = %.2f (target >= 0.9)\n", a, b, a / b }'
echo "load average at the end $(load)"
