#!/bin/sh
# Training tokens/s on each GEMM backend (issue 18), in one run: the same experiment
# (default configs/bench-torch.yaml, the issue's medium model) through bench_train with
# --set parallel.gemm=openblas and =onednn, REPEATS rounds alternating, so that load from
# other jobs hits both alike. Prints each run, each backend's best tokens/s and their
# ratio, and, from the fastest run of each, the ratio of the step and of the MoE layers to
# "the machine's GEMM rate" (the faster backend at one expert's shape, bench_train).
#
#   bench/gemm/backends.sh [-b BUILD_DIR] [-r REPEATS] [-s STEPS] [-c CONFIG] [-n NP]
#                          [-t THREADS]
#
# NP processes (default 1) x THREADS threads each (default 1). The demo dataset is made
# once in a temporary directory. Run it under `flock /work/suite.lock` on a shared machine.
set -eu

me=backends.sh opts="brscnt" help="2,13"
repeats=2 steps=2 np=1 threads=1
. "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
bench_parse "$@"
bench_setup omni-backends
echo "$me: $(basename "$config"), $np process(es) x $threads thread(s), $steps timed" \
    "steps, $repeats rounds; load $(load)"

for r in $(seq 1 "$repeats"); do
    for g in openblas onednn; do
        out="$tmp/$g.$r"
        $mpi -np "$np" "$bench" "$config" --data "$tmp/demo.h5" --steps "$steps" --warmup 1 \
            --set parallel.threads="$threads" --set parallel.gemm="$g" >"$out" 2>&1 ||
            { cat "$out" >&2; exit 1; }
        echo "  round $r $g: $(field "$out" tokens_per_s) tokens/s, step $(field "$out" step_best) s"
    done
done

best() { # best BACKEND: the file of its fastest run
    b=""
    bt=0
    for r in $(seq 1 "$repeats"); do
        t=$(field "$tmp/$1.$r" tokens_per_s)
        if awk -v a="$t" -v b="$bt" 'BEGIN { exit !(a > b) }'; then b="$tmp/$1.$r"; bt=$t; fi
    done
    echo "$b"
}
fb=$(best openblas)
fd=$(best onednn)
for f in "$fb" "$fd"; do
    g=$(field "$f" gemm_backend)
    np_=$(field "$f" np)
    awk -v g="$g" -v np="$np_" -v tok="$(field "$f" tokens_per_s)" -v fl="$(field "$f" gflops)" \
        -v moe="$(field "$f" moe_gflops)" -v best="$(field "$f" gemm_best)" \
        -v ob="$(field "$f" gemm_openblas)" -v od="$(field "$f" gemm_onednn)" 'BEGIN {
        printf "  %-8s best %.0f tokens/s; step %.1f GFLOP/s per process = %.0f%% of the GEMM " \
               "rate %.1f (openblas %.1f, onednn %.1f); MoE layers %.1f = %.0f%%\n",
               g, tok, fl / np, 100 * fl / np / best, best, ob, od, moe, 100 * moe / best }'
done
awk -v b="$(field "$fb" tokens_per_s)" -v d="$(field "$fd" tokens_per_s)" \
    'BEGIN { printf "RESULT backends openblas=%.1f onednn=%.1f onednn/openblas=%.3f\n", b, d, d / b }'
