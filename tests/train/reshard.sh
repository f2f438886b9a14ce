#!/usr/bin/env bash
# Resharding (issue 7): a checkpoint written by 4 processes resumes on 2 and on 1, one
# written by 1 process resumes on 4, and one of 2 experts replicated over 4 processes
# resumes on 1 — parameters, AdamW moments and balancing state included — and the
# continued losses match the uninterrupted run within the world-size tolerance of
# world_size.sh (relative 1e-4, expert loads exact; dropless, so no capacity depends on
# the slice size). A control shows the tolerance would catch a lost optimizer state:
# resuming a copy whose /optim moments are zeroed must fail the same comparison.
. "$(dirname "$0")/lib.sh"

# resume_on NP FROM_DIR NAME REFERENCE [flags]: resume FROM_DIR's step-10 checkpoint on NP
# processes in directory NAME and compare steps 11..20 with REFERENCE's metrics.
resume_on() {
    local np=$1 from=$2 name=$3 ref=$4
    shift 4
    mkdir -p $name && cp $from/ckpt-00000010.h5 $name/ || fail "no checkpoint in $from"
    must_train $np $name "$@" --resume $name/ckpt-00000010.h5
    grep -q "resumed from $name/ckpt-00000010.h5 at step 10 (written by $(sed -n 's/.* on \([0-9]*\) process.*/\1/p' $from.log | head -n 1) process" $name.log ||
        fail "$name: not resumed from the checkpoint of $from"
    grep -q "on $np process" $name.log || fail "$name: not on $np processes"
    check close $ref/metrics.jsonl $name/metrics.jsonl --rtol 1e-4 --from 11
}

must_train 4 w4 --set checkpoint.every=10
resume_on 2 w4 w4-on2 w4
resume_on 1 w4 w4-on1 w4

must_train 1 w1 --set checkpoint.every=10
resume_on 4 w1 w1-on4 w4

must_train 4 rep4 --set checkpoint.every=10 --set moe.num_experts=2
resume_on 1 rep4 rep4-on1 rep4 --set moe.num_experts=2

# Control: without the moments the continued losses leave the tolerance.
pyh5=/usr/bin/python3
if "$pyh5" -c 'import h5py' 2>/dev/null; then
    mkdir -p noopt && cp w4/ckpt-00000010.h5 noopt/ || fail "copy"
    "$pyh5" -c '
import h5py
with h5py.File("noopt/ckpt-00000010.h5", "r+") as f:
    def zero(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[...] = 0
            del obj.attrs["crc32c"]  # an edit drops the checksum
    f["optim"].visititems(zero)
' || fail "cannot zero the moments"
    must_train 2 noopt --resume noopt/ckpt-00000010.h5
    if "$py" "$here/jsonl.py" close w4/metrics.jsonl noopt/metrics.jsonl --rtol 1e-4 --from 11 \
        >/dev/null 2>&1; then
        fail "the comparison does not notice zeroed optimizer moments"
    fi
    echo "control: zeroed moments are caught by the comparison"
fi
echo "ok: checkpoints reshard across 1, 2 and 4 processes"
