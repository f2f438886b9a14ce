#!/usr/bin/env bash
# Bad resume inputs through the binary (issue 7), on 2 processes: a checkpoint of another
# model, a flipped byte, a truncated checkpoint, a missing file, --resume auto with no
# checkpoint: each is exit 2 with one message naming the file and the fault, and nothing in the output
# directory is written. Changed training-only keys are accepted and reported.
. "$(dirname "$0")/lib.sh"

must_train 2 run --set optim.steps=10
snapshot() { (cd run && ls -l --time-style=+%s.%N && cat latest && md5sum ./*); }
before=$(snapshot)

# expect_bad NAME PATTERN [flags...]: training into run/ fails with exit 2, the one
# message matches PATTERN, and run/ is as it was.
expect_bad() {
    local name=$1 pattern=$2
    shift 2
    cmdline 2 run "$@"
    "${cmd[@]}" >$name.log 2>&1
    local rc=$?
    [[ $rc -eq 2 ]] || fail "$name: exit $rc, expected 2: $(tail -n 5 $name.log)"
    [[ $(grep '^omnimoe:' $name.log | grep -vc '^omnimoe: warning:') -eq 1 ]] ||
        fail "$name: not exactly one error message"
    grep -qE "^omnimoe: $pattern" $name.log ||
        fail "$name: message '$(grep '^omnimoe:' $name.log)' does not match '$pattern'"
    ! grep -q '^step ' $name.log || fail "$name: it trained"
    [[ "$(snapshot)" == "$before" ]] || fail "$name: run/ changed"
    echo "$name: $(grep '^omnimoe:' $name.log)"
}

expect_bad other-model 'run/ckpt-00000010.h5: checkpoint of another model: model.d_model is 32 in the checkpoint, 64 in the experiment' \
    --set model.d_model=64 --resume auto
expect_bad other-experts 'run/ckpt-00000010.h5: .*moe.num_experts is 4 in the checkpoint, 8 in the experiment' \
    --set moe.num_experts=8 --resume run/ckpt-00000010.h5
# One byte flipped inside expert 3 of a weight (rank 1's expert on 2 processes), behind
# HDF5's back: its checksum names the file, the tensor and the expert's rows.
cp run/ckpt-00000010.h5 flip.h5 || fail "copy"
/usr/bin/python3 -c '
import h5py, sys
with h5py.File("flip.h5", "r") as f:
    w = f["params/layers/01/moe/experts/w1"]
    at = w.id.get_offset() + 3 * w[0].nbytes + 17
with open("flip.h5", "r+b") as raw:
    raw.seek(at); b = raw.read(1); raw.seek(at); raw.write(bytes([b[0] ^ 0x40]))
' || fail "cannot flip a byte of flip.h5"
expect_bad flipped '(\[rank 1\] )?flip.h5: params/layers/01/moe/experts/w1: checksum mismatch in rows \[3, 4\)' \
    --resume flip.h5
head -c 100000 run/ckpt-00000010.h5 >trunc.h5
expect_bad truncated 'trunc.h5: ' --resume trunc.h5
expect_bad missing 'nope.h5: ' --resume nope.h5
# A directory whose only checkpoint is broken: an error, never a silent restart.
mkdir -p broken
head -c 5000 run/ckpt-00000010.h5 >broken/ckpt-00000010.h5
cmdline 2 broken --resume auto
"${cmd[@]}" >none.log 2>&1
rc=$?
[[ $rc -eq 2 ]] || fail "resume auto with only a broken checkpoint: exit $rc, expected 2"
grep -q '^omnimoe: broken: no complete checkpoint' none.log || fail "none: $(grep omnimoe: none.log)"
[[ $(ls broken) == "ckpt-00000010.h5" ]] || fail "resume auto with a broken checkpoint wrote into broken/"
echo "none: $(grep '^omnimoe:' none.log)"
# An experiment's first run with --resume auto starts at step 0.
mkdir -p fresh
cmdline 2 fresh --resume auto --set optim.steps=2
"${cmd[@]}" >fresh.log 2>&1 || fail "resume auto in a new directory: exit $?"
grep -q 'no checkpoint in fresh yet, starting at step 0' fresh.log || fail "fresh: $(tail -3 fresh.log)"
grep -q '^done: 2 steps' fresh.log || fail "fresh run did not train"

# Training-only keys may change: accepted, reported, and the run continues.
must_train 2 run --resume auto --set optim.steps=12 --set log.every=2
grep -q "training keys changed since the checkpoint: optim.steps 10 -> 12; log.every 1 -> 2" run.log ||
    fail "changed keys not reported: $(grep 'changed' run.log)"
grep -q '^done: 12 steps' run.log || fail "did not continue to step 12"
echo "ok: bad resume inputs are exit 2 with their message, nothing overwritten"
