#!/usr/bin/env bash
# SIGTERM during training (issues 6, 7): the job finishes the step in flight, writes a
# checkpoint, exits 0, and --resume auto continues from it. Three ways the signal comes:
#  1. SIGTERM to every rank, as Slurm (scancel, the end of a time limit) delivers it;
#  2. SIGTERM to rank 1 only: the ranks OR their flags, so the whole job stops together;
#  3. SIGUSR1 to mpirun, which forwards it to every rank (a SIGTERM to mpirun itself makes
#     Open MPI kill the job: SIGTERM to the ranks, SIGKILL one second later; see
#     docs/training.md).
. "$(dirname "$0")/lib.sh"

# stop_run NAME SIGNAL WHO: start a long run, signal it after 3 logged steps, expect a
# checkpoint of the step it stopped at; echoes that step.
stop_run() {
    local name=$1 sig=$2 who=$3 p
    start 2 "$name" --set optim.steps=100000 --set checkpoint.every=0
    wait_lines "$name/metrics.jsonl" 3 30 || fail "$name: no training seen: $(tail -n 5 "$name.log")"
    case $who in
    ranks) for r in 0 1; do p=$(rank_pid $job $r) || fail "no rank $r"; kill -s "$sig" "$p"; done ;;
    rank1) p=$(rank_pid $job 1) || fail "no rank 1"; kill -s "$sig" "$p" ;;
    mpirun) kill -s "$sig" "$job" ;;
    esac
    ends_within $job 30
    [[ $rc -eq 0 ]] || fail "$name: exit $rc after SIG$sig to $who, expected 0: $(tail -n 20 "$name.log")"
    local step
    step=$(sed -n "s/^signal [0-9]*: stopping after step \([0-9]*\)$/\1/p" "$name.log")
    [[ -n $step ]] || fail "$name: no 'stopping after step' line"
    local file
    file=$(printf 'ckpt-%08d.h5' "$step")
    [[ -f $name/$file && $(cat "$name/latest") == "$file" ]] || fail "$name: no checkpoint of step $step"
    grep -q "^checkpoint $name/$file" "$name.log" || fail "$name: checkpoint not reported"
    [[ $(check last-step "$name/metrics.jsonl") == "$step" ]] || fail "$name: last logged step is not $step"
    echo "$name: SIG$sig to $who stopped after step $step with $file"
    stopped=$step
}

stop_run all TERM ranks
# Continue: --resume auto picks the checkpoint; a changed step count is reported.
to=$((stopped + 3))
must_train 2 all --resume auto --set optim.steps=$to
grep -q "resumed from all/ckpt-$(printf %08d $stopped).h5 at step $stopped" all.log || fail "no resume"
grep -q "training keys changed since the checkpoint: optim.steps 100000 -> $to" all.log ||
    fail "the changed step count is not reported"
grep -q "^done: $to steps" all.log || fail "the resumed run did not reach step $to"

stop_run one TERM rank1
stop_run usr1 USR1 mpirun
grep -q "Forwarding signal 10 to job" usr1.log || fail "mpirun did not forward SIGUSR1"
echo "ok: signals stop the job with a checkpoint, exit 0, and the run resumes"
