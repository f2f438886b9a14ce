#!/usr/bin/env bash
# SIGKILL while a checkpoint is being written during training (issue 7) leaves the
# previous checkpoint complete, and --resume auto uses it. A wider model (44 MB
# checkpoints, parameters and moments) checkpoints every step, so a write is in progress
# for most of the run; rank 0 (the rank that renames the file and updates `latest`) is
# killed once a .tmp of step 2 or later has more than 4 MiB in it (stopped first, and
# killed only if that save is still unfinished). OMNI_TEST_CKPT_STALL_MS holds each save
# open for 3 s halfway through its data (docs/checkpoints.md, "Testing"), so the kill lands
# in a write on an idle machine too, where a save takes well under a second. The storage-level
# twin of this test is tests/checkpoint/kill_during_save.sh.
. "$(dirname "$0")/lib.sh"
wide=(--set model.d_model=128 --set moe.num_experts=8 --set moe.expert_ff=512
    --set data.batch=2 --set checkpoint.every=1 --set checkpoint.keep=2)

export OMNI_TEST_CKPT_STALL_MS=3000
start 2 run "${wide[@]}" --set optim.steps=40
unset OMNI_TEST_CKPT_STALL_MS
victim=""
for _ in $(seq 1 6000); do
    tmp=$(cd run 2>/dev/null && ls ckpt-*.h5.tmp 2>/dev/null | head -n 1)
    if [[ -n $tmp ]]; then
        step=$((10#$(echo "$tmp" | sed 's/^ckpt-\([0-9]*\)\.h5\.tmp$/\1/')))
        size=$(stat -c %s "run/$tmp" 2>/dev/null || echo 0)
        if ((step >= 2 && size > 4194304)); then
            # Freeze rank 0 first, then make sure the save is still unfinished (on an idle
            # machine a 44 MB save can complete between the look and the kill); if it
            # finished, let it go on and wait for the next one.
            victim=$(rank_pid $job 0) || fail "no rank 0 process"
            kill -STOP "$victim"
            if [[ -e run/$tmp ]]; then
                kill -9 "$victim"
                break
            fi
            kill -CONT "$victim"
            victim=""
        fi
    fi
    kill -0 $job 2>/dev/null || fail "the job ended before a save was seen: $(tail -n 5 run.log)"
    sleep 0.005
done
[[ -n $victim ]] || { kill -9 -- -$job; fail "no save in progress seen"; }
ends_within $job 20
[[ $rc -ne 0 ]] || fail "the killed job exited 0"
ls -l run

killed=$(cd run && ls ckpt-*.h5.tmp 2>/dev/null | sed -n 's/^ckpt-\([0-9]*\)\.h5\.tmp$/\1/p' | head -n 1)
[[ -n $killed ]] || fail "no .tmp left: the kill came after the save finished"
killed=$((10#$killed))
prev=$(printf 'ckpt-%08d.h5' $((killed - 1)))
[[ ! -e run/$(printf 'ckpt-%08d.h5' $killed) ]] || fail "step $killed appeared complete"
[[ $(cat run/latest) == "$prev" ]] || fail "latest is '$(cat run/latest)', expected $prev"
"$bin" ckpt info "run/$prev" >info.txt 2>&1 || fail "the previous checkpoint does not open: $(cat info.txt)"
echo "killed while writing step $killed; $prev is complete"

must_train 2 run "${wide[@]}" --set optim.steps=$((killed + 1)) --resume auto
grep -q "resumed from run/$prev at step $((killed - 1))" run.log || fail "did not resume from $prev"
grep -q "^done: $((killed + 1)) steps" run.log || fail "the resumed run did not finish"
! ls run/*.tmp >/dev/null 2>&1 || fail "the stale .tmp was not swept by the next save"
echo "ok: a SIGKILL during a save leaves the previous checkpoint, which resumes"
