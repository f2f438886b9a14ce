#!/usr/bin/env bash
# model.recompute (issue 18): keeping only each block's input and making its activations
# again in backward computes the same thing. The recomputation runs the very calls of the
# forward on the very inputs, so 20 steps with and without it give bit-identical metrics
# (every loss, per-task loss, aux and z loss, expert load) and final parameters and AdamW
# moments; checked on a model with a dense and an MoE block on 2 processes (capacity on, so
# drops must repeat too), and on a dense model on 1 process. A resume may switch it on.
. "$(dirname "$0")/lib.sh"

variant() {
    local name=$1 np=$2
    shift 2
    must_train $np $name-kept "$@"
    must_train $np $name-recomputed "$@" --set model.recompute=true
    check same $name-kept/metrics.jsonl $name-recomputed/metrics.jsonl
    if command -v h5diff >/dev/null; then
        for g in /params /optim; do
            h5diff $name-kept/ckpt-00000020.h5 $name-recomputed/ckpt-00000020.h5 $g $g ||
                fail "$name: final checkpoints differ under $g"
        done
    fi
    echo "ok: $name: recomputed activations train to the bit as kept ones"
}

variant mixed 2 --set moe.every=2 --set moe.capacity_factor=1.0
variant dense 1 --set moe.every=0

# model.recompute changes how the step is computed, not the model: a run may resume with it.
must_train 1 leg1 --set moe.every=2 --set optim.steps=10 --set checkpoint.every=10
must_train 1 leg1 --set moe.every=2 --set model.recompute=true --resume leg1/ckpt-00000010.h5
grep -q "resumed from leg1/ckpt-00000010.h5 at step 10" leg1.log || fail "no resume with recompute"
echo "ok: a run resumes with model.recompute switched on"
