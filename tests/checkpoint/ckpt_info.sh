#!/usr/bin/env bash
# `omnimoe ckpt info`: a good checkpoint is described (exit 0), bad ones give a message
# naming the file and the fault (exit 2), usage errors exit 2; on 1 and 2 processes.
#   ckpt_info.sh MPIEXEC CKPT_MPI DIR      (env OMNIMOE: the omnimoe binary)
. "$(dirname "$0")/../lib/common.sh"
mpiexec=$1 tool=$2 dir=$3
[[ -x "${OMNIMOE:-}" ]] || fail "OMNIMOE is not set to the omnimoe binary"

# The good and bad files of the bad-input test.
"$mpiexec" -n 1 "${flags[@]}" "$tool" bad "$dir" >"$dir.log" 2>&1 || fail "making files: $(cat "$dir.log")"

expect() { # expect CODE "TEXT..." -- command...
    local code=$1
    shift
    local texts=()
    while [[ $1 != -- ]]; do texts+=("$1"); shift; done
    shift
    out=$("$@" 2>&1)
    got=$?
    [[ $got == "$code" ]] || fail "$* exited $got, expected $code: $out"
    for t in "${texts[@]}"; do
        grep -qF -- "$t" <<<"$out" || fail "$* does not say '$t': $out"
    done
    echo "ok ($got): $*"
}

good="$dir/ckpt-00000005.h5"
for launch in "" "$mpiexec -n 2 ${flags[*]}"; do
    expect 0 "step         5" "tokens seen  1280" "world size   1 process" \
        "parameters   7840 total, 3232 active per token" "MoE layer 1 (block 3)" \
        "tasks        2, <task> tokens 1283..1284 of a vocabulary of 1285" \
        "   0 b                image_to_text  token 1283" \
        "   1 a                control        token 1284, obs_dim 4, act_dim 1, discrete actions" \
        "images       16x16, 1 channel, patch 4, resize pad" \
        -- $launch "$OMNIMOE" ckpt info "$good"
    [[ $(grep -c '^step' <<<"$out") == 1 ]] || fail "printed more than once: $out"
    # Format 1 (no tokenization) is still described.
    expect 0 "(format 1," "tasks        no task table (format 1); data.tasks: a, b" \
        -- $launch "$OMNIMOE" ckpt info "$dir/format1.h5"
    expect 2 "$dir/taskindex.h5: two tasks of /tokenization/tasks have index 0" \
        -- $launch "$OMNIMOE" ckpt info "$dir/taskindex.h5"
    expect 2 "$dir/truncated.h5: damaged or truncated HDF5 file" \
        -- $launch "$OMNIMOE" ckpt info "$dir/truncated.h5"
    expect 2 "$dir/notes.h5: not an HDF5 file" -- $launch "$OMNIMOE" ckpt info "$dir/notes.h5"
    expect 2 "$dir/version.h5: checkpoint format version 99" \
        -- $launch "$OMNIMOE" ckpt info "$dir/version.h5"
    expect 2 "$dir/foreign.h5: not an omnimoe checkpoint" \
        -- $launch "$OMNIMOE" ckpt info "$dir/foreign.h5"
    expect 2 "$dir/absent.h5: cannot open checkpoint" \
        -- $launch "$OMNIMOE" ckpt info "$dir/absent.h5"
    # --verify reads every dataset: the good file matches; a flipped byte inside expert 5
    # (whichever rank reads it) and a tensor whose checksum was dropped are exit 2.
    expect 0 "every checksum matches" -- $launch "$OMNIMOE" ckpt info "$good" --verify
    expect 2 "$dir/flip.h5: params/layers/01/moe/experts/w1: checksum mismatch in rows [5, 6)" \
        -- $launch "$OMNIMOE" ckpt info --verify "$dir/flip.h5"
    expect 2 "$dir/nan.h5: 1 of" "carry no checksum (first: /params/embed/tok)" \
        -- $launch "$OMNIMOE" ckpt info --verify "$dir/nan.h5"
done
expect 2 "no checkpoint file given" "usage: omnimoe ckpt info" -- "$OMNIMOE" ckpt info
expect 2 "unknown subcommand 'show'" -- "$OMNIMOE" ckpt show "$good"
expect 0 "usage: omnimoe ckpt info" -- "$OMNIMOE" ckpt --help
echo "ok"
