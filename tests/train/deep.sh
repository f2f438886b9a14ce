#!/usr/bin/env bash
# Deep models (issue 11): the config accepts model.n_layers up to 256, so a model of
# LAYERS blocks (CTest runs 64 and 200) must create, train, checkpoint and resume like a
# 2-layer one, on 1 and 2 processes. It is tiny in width (d_model 8, a mix of dense and
# MoE blocks) so the test stays fast: 2 steps with a checkpoint after each, then step 2
# again resumed from the step-1 checkpoint, bit-identical to the straight run (metrics and
# final state). Called as: deep.sh MPIEXEC DATA WORKDIR LAYERS.
. "$(dirname "$0")/lib.sh"
layers=${4:?LAYERS}

deep=(--set model.d_model=8 --set model.n_heads=1 --set model.d_ff=8 --set model.context=16
    --set moe.num_experts=2 --set moe.top_k=1 --set moe.every=4 --set moe.expert_ff=8
    --set data.batch=2 --set optim.steps=2 --set optim.warmup=1 --set checkpoint.every=1)

for np in 1 2; do
    name=L$layers-np$np
    must_train $np $name "${deep[@]}" --set model.n_layers=$layers
    grep -q "done: 2 steps" $name.log || fail "$name: did not train 2 steps"
    last=$(printf 'params/layers/%02d/attn/wqkv' $((layers - 1)))
    if command -v h5ls >/dev/null; then
        h5ls $name/ckpt-00000002.h5/$last >/dev/null || fail "$name: no $last in the checkpoint"
    fi
    mkdir -p $name-resumed && cp $name/ckpt-00000001.h5 $name-resumed/ || fail "$name: no step-1 checkpoint"
    must_train $np $name-resumed "${deep[@]}" --set model.n_layers=$layers \
        --resume $name-resumed/ckpt-00000001.h5
    grep -q "resumed from $name-resumed/ckpt-00000001.h5 at step 1" $name-resumed.log ||
        fail "$name: no resume"
    check same $name/metrics.jsonl $name-resumed/metrics.jsonl --from 2
    if command -v h5diff >/dev/null; then
        for g in /params /optim /state; do
            h5diff $name/ckpt-00000002.h5 $name-resumed/ckpt-00000002.h5 $g $g ||
                fail "$name: final checkpoints differ under $g"
        done
    fi
    echo "$name: trained, checkpointed and resumed bit-identically"
done
echo "ok: a $layers-layer model trains, checkpoints and resumes on 1 and 2 processes"
