#!/usr/bin/env bash
# data.micro_batch (issue 18): a rank's share of the global batch in several forward passes
# whose gradients accumulate is the same step as one pass. Checked against the unsplit run
# (losses and per-task losses to 1e-5 relative, expert loads, drop shares and routing
# counts exactly: jsonl.py close) on 1 and 2 processes, on a global batch of 7 (2
# processes: slices of 4 and 3, so one rank makes an empty pass), with capacity drops and
# the aux and z losses on (the routing pre-pass must give each pass the whole batch's
# drops and statistics); on a dense model; under expert choice (each expert picks over the
# whole global batch); with jitter, the balancing bias, a shared expert, the entropy losses
# and model.recompute together; dropless with no batch-level loss (no pre-pass); and across
# a resume that changes micro_batch; in bf16 (where the CPU has it).
# Bad values stop the run with exit 2 naming the key.
. "$(dirname "$0")/lib.sh"

base=(--set data.batch=7 --set optim.steps=4 --set eval.every=4 --set optim.lr=0.02 --set optim.warmup=0)
drops=(--set moe.capacity_factor=1.0 --set moe.aux_loss=0.1 --set moe.z_loss=0.01)

# same NAME NP [flags...]: the unsplit run and the given micro-batch sizes (MB, a list)
# agree.
same() {
    local name=$1 np=$2
    shift 2
    must_train $np $name "${base[@]}" "$@"
    for mb in $MB; do
        must_train $np $name-mb$mb "${base[@]}" "$@" --set data.micro_batch=$mb
        check close $name/metrics.jsonl $name-mb$mb/metrics.jsonl --rtol 1e-5
    done
    echo "ok: $name on $np processes: micro-batches $MB give the unsplit steps"
}

MB="3" same moe1 1 "${drops[@]}"
check drops moe1/metrics.jsonl
MB="1 2" same moe2 2 "${drops[@]}"
check drops moe2/metrics.jsonl
MB="2" same dense 2 --set moe.every=0
MB="1" same choice 2 --set moe.router=expert_choice --set moe.capacity_factor=1.0 \
    --set moe.aux_loss=0
# (model.recompute on in both: micro-batch passes recompute their blocks too)
MB="2" same mixed 2 "${drops[@]}" --set moe.jitter=0.1 --set moe.bias_rate=0.01 \
    --set moe.shared_experts=1 --set 'moe.entropy={local: 0.05, global: 0.05, threshold: 2.0}' \
    --set model.recompute=true
MB="1" same dropless 2 --set moe.aux_loss=0 --set moe.z_loss=0
# bf16 with a dense block (its FFN input and the final norm are kept in bf16 only): the
# pre-pass and the passes make the products of one pass
if "$bin" --version | grep -q "bf16 *available"; then
    MB="2" same bf16 2 "${drops[@]}" --set model.precision=bf16 --set moe.every=2
fi
# A checkpoint does not depend on micro_batch: resuming with another gives the same steps.
must_train 2 leg "${base[@]}" "${drops[@]}" --set data.micro_batch=2 --set checkpoint.every=2
must_train 2 leg "${base[@]}" "${drops[@]}" --resume leg/ckpt-00000002.h5
grep -q "resumed from leg/ckpt-00000002.h5 at step 2" leg.log || fail "no resume"
check close moe2/metrics.jsonl leg/metrics.jsonl --rtol 1e-5
echo "ok: a run resumes with another micro_batch on the same trajectory"

for bad in -1 1.5 two; do
    train 1 bad --set data.micro_batch=$bad
    rc=$?
    [[ $rc == 2 ]] || fail "data.micro_batch=$bad: exit $rc, expected 2"
    grep -q "data.micro_batch" bad.log || fail "data.micro_batch=$bad: the message names no key"
done
echo "ok: bad data.micro_batch values are refused"
