#!/usr/bin/env bash
# Chaos resume (issue 12): a 2-process training is killed with SIGKILL three times, each
# time resumed with --resume auto in the same directory, then run to its end; its metrics
# and final parameters, moments and state are bit-identical to a run never stopped.
# Kills 1 and 3 hit a checkpoint write (a .tmp being written; a random rank dies at once),
# kill 2 a random moment of a step. The moments are drawn from a seed that is printed
# (OMNI_CHAOS_SEED replays one); they are set by progress (steps logged), not by time, so
# a slow or a fast machine sees the same kinds of moments.
. "$(dirname "$0")/lib.sh"
seed=${OMNI_CHAOS_SEED:-$(date +%s%N | cut -c10-18)}
RANDOM=$((10#$seed % 32768))
echo "chaos seed $seed"
steps=12
common=(--set optim.steps=$steps --set checkpoint.keep=2)

# Checkpointing does not change the trajectory: the straight run writes only its last.
must_train 2 straight "${common[@]}" --set checkpoint.every=$steps

# The last step logged in chaos/metrics.jsonl (0 before any).
last_step() {
    local s
    s=$(tail -n 1 chaos/metrics.jsonl 2>/dev/null | sed -n 's/.*"step": *\([0-9]*\).*/\1/p')
    echo "${s:-0}"
}

mkdir -p chaos
during_write=0
for k in 1 2 3; do
    # Saves pause 0.5 s halfway through their data (docs/checkpoints.md, "Testing"), so
    # kills 1 and 3 find a write in progress on a fast machine too.
    export OMNI_TEST_CKPT_STALL_MS=500
    start 2 chaos "${common[@]}" --set checkpoint.every=2 --resume auto
    unset OMNI_TEST_CKPT_STALL_MS
    target=$(( (k - 1) * 4 + 2 + RANDOM % 2 )) # steps 2-3, 6-7, 10-11
    victim_rank=$((RANDOM % 2))
    killed=""
    for _ in $(seq 1 12000); do
        kill -0 $job 2>/dev/null || break
        if (( $(last_step) >= target )); then
            if ((k == 2)); then
                sleep "0.0$((RANDOM % 10))"
            else
                ls chaos/ckpt-*.h5.tmp >/dev/null 2>&1 || { sleep 0.002; continue; }
            fi
            victim=$(rank_pid $job $victim_rank) || continue
            kill -9 "$victim"
            killed="rank $victim_rank after step $(last_step)"
            if ls chaos/ckpt-*.h5.tmp >/dev/null 2>&1; then
                killed+=", while $(cd chaos && ls ckpt-*.h5.tmp | head -n 1) was being written"
                during_write=$((during_write + 1))
            fi
            break
        fi
        sleep 0.005
    done
    ends_within $job 30
    if [[ -n $killed ]]; then
        [[ $rc -ne 0 ]] || fail "kill $k: the killed job exited 0"
    else
        # On a fast idle machine the 12 steps can end before the moment drawn: no kill.
        [[ $rc -eq 0 ]] || fail "kill $k: the job failed unkilled: $(tail -n 3 chaos.log)"
        killed="none (the job finished first)"
    fi
    cp chaos.log chaos-$k.log
    echo "kill $k: $killed; $(cat chaos/latest 2>/dev/null || echo 'no checkpoint yet')"
done
((during_write >= 1)) || echo "note: no kill came during a checkpoint write this time (seed $seed)"

must_train 2 chaos "${common[@]}" --set checkpoint.every=2 --resume auto
grep -q "^done: $steps steps" chaos.log || fail "the last run did not finish: $(tail -n 3 chaos.log)"
check same straight/metrics.jsonl chaos/metrics.jsonl
final=$(printf 'ckpt-%08d.h5' $steps)
for g in /params /optim /state; do
    h5diff straight/$final chaos/$final $g $g || fail "final checkpoints differ under $g"
done
"$bin" ckpt info chaos/$final --verify >verify.txt 2>&1 || fail "final checkpoint: $(cat verify.txt)"
echo "ok: after 3 SIGKILLs ($during_write during a checkpoint write) and resumes, bit-identical"
