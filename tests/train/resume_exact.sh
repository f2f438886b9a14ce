#!/usr/bin/env bash
# Resume exactness (issue 7): at the same world size, 20 steps straight and 10 steps +
# resume + 10 steps give bit-identical per-step metrics (losses, per-task losses, aux and
# z losses, expert loads, drop shares: every field of metrics.jsonl but the timings, which
# are written with round-trip precision) and bit-identical final parameters and AdamW
# moments. The first leg is a 20-step run that checkpoints every 10 steps (so its schedule
# is that of 20 steps); its step-10 checkpoint is copied to a fresh directory and resumed
# there. Two variants: 2 processes with capacity on (drops), auxiliary-loss-free biases
# and router jitter (state and random streams that must be restored); 1 process dropless.
. "$(dirname "$0")/lib.sh"

variant() {
    local name=$1 np=$2
    shift 2
    must_train $np $name-straight "$@"
    must_train $np $name-leg1 "$@" --set checkpoint.every=10
    mkdir -p $name-leg2 && cp $name-leg1/ckpt-00000010.h5 $name-leg2/ || fail "no step-10 checkpoint"
    must_train $np $name-leg2 "$@" --resume $name-leg2/ckpt-00000010.h5
    grep -q "resumed from $name-leg2/ckpt-00000010.h5 at step 10" $name-leg2.log || fail "$name: no resume"
    check same $name-straight/metrics.jsonl $name-leg1/metrics.jsonl
    check same $name-straight/metrics.jsonl $name-leg2/metrics.jsonl --from 11
    [[ $(check last-step $name-leg2/metrics.jsonl) == 20 ]] || fail "$name: leg 2 did not reach step 20"
    # The final checkpoints hold the same parameters, moments and biases, to the bit.
    if command -v h5diff >/dev/null; then
        for g in /params /optim /state; do
            h5diff $name-straight/ckpt-00000020.h5 $name-leg2/ckpt-00000020.h5 $g $g ||
                fail "$name: final checkpoints differ under $g"
        done
        echo "$name: final checkpoints identical under /params /optim /state"
    fi
}

variant capacity 2 --set moe.capacity_factor=1.0 --set moe.bias_rate=0.01 --set moe.jitter=0.1
grep -q '| drop [1-9][0-9.]*% |\| drop 0\.[1-9]% |' capacity-straight.log || fail "capacity variant dropped nothing"
variant dropless 1
echo "ok: resumed runs are bit-identical to straight ones"
