#!/usr/bin/env bash
# SIGKILL a process of a 2-process job while it writes a checkpoint, then check that the
# newest complete checkpoint is the one before, that find-latest returns it, that every
# value of it loads exactly, and that the next save sweeps the leftover .tmp.
#   kill_during_save.sh MPIEXEC CKPT_MPI DIR
. "$(dirname "$0")/../lib/common.sh"
mpiexec=$1 tool=$2 dir=$3

rm -rf "$dir" && mkdir -p "$dir" || fail "cannot make $dir"
# Each save pauses 2 s halfway through its data (the checkpoint's fault-injection hook), so
# the kill lands inside a write however fast the machine is.
OMNI_TEST_CKPT_STALL_MS=2000 "$mpiexec" -n 2 "${flags[@]}" "$tool" loop "$dir" >"$dir/loop.log" 2>&1 &
job=$!

# Wait for the save of step 3 or later to be writing data (its .tmp past 1 MiB of the
# 16 MiB), then kill rank 1 at once.
victim=""
for _ in $(seq 1 3000); do
    tmp=$(cd "$dir" && ls ckpt-*.h5.tmp 2>/dev/null | head -n 1)
    if [[ -n "$tmp" && -f "$dir/pid.1" ]]; then
        step=$((10#$(echo "$tmp" | sed 's/^ckpt-\([0-9]*\)\.h5\.tmp$/\1/')))
        size=$(stat -c %s "$dir/$tmp" 2>/dev/null || echo 0)
        if ((step >= 3 && size > 1048576)); then
            # Freeze both ranks, then kill rank 1 only if that save is still unfinished
            # (on an idle machine it can complete between the look and the kill).
            victim=$(cat "$dir/pid.1")
            other=$(cat "$dir/pid.0" 2>/dev/null || true)
            kill -STOP "$victim" $other
            if [[ -e "$dir/$tmp" ]]; then
                kill -9 "$victim"
                [[ -n "$other" ]] && kill -CONT "$other"
                break
            fi
            kill -CONT "$victim" $other
            victim=""
        fi
    fi
    kill -0 "$job" 2>/dev/null || fail "the saving job ended early: $(cat "$dir/loop.log")"
    sleep 0.005
done
[[ -n "$victim" ]] || { kill -9 "$job"; fail "no save in progress seen"; }

# The job must end (Open MPI takes the other rank down); do not let it linger.
for _ in $(seq 1 200); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$job" 2>/dev/null && { kill -9 "$job"; sleep 0.5; }
wait "$job" 2>/dev/null
ls -l "$dir"

# The killed save left its .tmp (or got no further than it), never a final file of its step.
killed=$(cd "$dir" && ls ckpt-*.h5.tmp 2>/dev/null | sed -n 's/^ckpt-\([0-9]*\)\.h5\.tmp$/\1/p' | head -n 1)
if [[ -z "$killed" ]]; then
    # Rank 1 had passed the save's last collective call, so rank 0 finished and renamed the
    # file (a complete, valid checkpoint): the kill came too late to test. Try again.
    try=${OMNI_KILL_TRY:-1}
    ((try < 4)) || fail "no .tmp left in $try tries: every kill came after the save finished"
    echo "try $try: the kill came after the save's last collective step; again"
    OMNI_KILL_TRY=$((try + 1)) exec bash "$0" "$@" # the file need not be executable
fi
killed=$((10#$killed))
[[ ! -e "$dir/$(printf 'ckpt-%08d.h5' "$killed")" ]] || fail "step $killed appeared complete"
echo "killed while writing step $killed"

for np in 1 2; do
    out=$("$mpiexec" -n $np "${flags[@]}" "$tool" verify "$dir" 2>&1) || fail "verify on $np: $out"
    echo "$out"
    got=$(echo "$out" | sed -n 's/^verified step \([0-9]*\)$/\1/p')
    want=$((killed - 1 + np - 1)) # the verify on 1 process saved step killed
    [[ "$got" == "$want" ]] || fail "verified step '$got', expected $want"
done
echo "ok"
