#!/bin/sh
# Training step in bf16 against omnimoe's best fp32 step (issue 19), in one run: the same
# experiment (default configs/bench-torch.yaml, the medium model) through bench_train as
# fp32 on OpenBLAS, fp32 on oneDNN and bf16 (model.precision bf16, on oneDNN), REPEATS
# rounds alternating so that load from other jobs hits all alike. Prints each run, each
# mode's best tokens/s and bf16's ratio to the faster fp32 mode.
#
#   bench/train/bf16.sh [-b BUILD_DIR] [-r REPEATS] [-s STEPS] [-c CONFIG] [-n NP] [-t THREADS]
#
# NP processes (default 2) x THREADS threads each (default 1). Run it under
# `flock /work/suite.lock` on a shared machine.
set -eu

me=bf16.sh opts="brscnt" help="2,11"
repeats=3 steps=3 np=2 threads=1
. "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
bench_parse "$@"
bench_setup omni-bf16
"$omnimoe" --version | grep -q "bf16 .*available (" ||
    bench_die "this machine has no bf16 products (omnimoe --version)"
echo "$me: $(basename "$config"), $np process(es) x $threads thread(s), $steps timed steps," \
    "$repeats rounds; load $(load)"

modes="fp32-openblas fp32-onednn bf16-onednn"
for r in $(seq 1 "$repeats"); do
    for m in $modes; do
        out="$tmp/$m.$r"
        $mpi -np "$np" "$bench" "$config" --data "$tmp/demo.h5" --steps "$steps" --warmup 1 \
            --set parallel.threads="$threads" --set parallel.gemm="${m#*-}" \
            --set model.precision="${m%-*}" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
        echo "  round $r $m: $(field "$out" tokens_per_s) tokens/s, step $(field "$out" step_best) s"
    done
done

best() { # best MODE: its best tokens/s
    bt=0
    for r in $(seq 1 "$repeats"); do
        t=$(field "$tmp/$1.$r" tokens_per_s)
        bt=$(awk -v a="$t" -v b="$bt" 'BEGIN { print (a > b) ? a : b }')
    done
    echo "$bt"
}
fb=$(best fp32-openblas)
fd=$(best fp32-onednn)
bf=$(best bf16-onednn)
awk -v fb="$fb" -v fd="$fd" -v bf="$bf" 'BEGIN {
    f = fb > fd ? fb : fd
    printf "  best tokens/s: fp32 openblas %.0f, fp32 onednn %.0f, bf16 %.0f; bf16 / best fp32 " \
           "%.2f\n", fb, fd, bf, bf / f
    printf "RESULT bf16 fp32_openblas=%.1f fp32_onednn=%.1f bf16=%.1f bf16/fp32=%.3f\n", fb, fd,
           bf, bf / f }'
