#!/usr/bin/env bash
# A fault on one rank ends the whole job within seconds with that rank's message and a
# non-zero status; nothing hangs (issue 6). Three realistic faults:
#  1. rank 1's copy of the data is corrupt. Clusters stage datasets to node-local disks;
#     here each rank runs in a directory of its own (an MPMD launch with --wdir, as two
#     nodes would) and data.files names the relative path demo.h5: rank 0's copy is good,
#     rank 1's has an offsets array that does not end at its tokens' length (written with
#     h5py). Every rank checks its files at start (attributes, shapes, end offsets; each
#     sample is checked when it is read); the failure is agreed and rank 0 prints rank 1's
#     message.
#  2. rank 0's disk fills while training: its metrics.jsonl is /dev/full, so the first
#     logged step fails to write on rank 0 only, mid-run; the job ends, exit 1.
#  3. rank 1 dies (SIGKILL, as the OOM killer does) mid-run: Open MPI ends the job.
. "$(dirname "$0")/lib.sh"
pyh5=/usr/bin/python3
"$pyh5" -c 'import h5py' 2>/dev/null || fail "h5py is needed ($pyh5, Debian's python3-h5py)"

# 1. corrupt sample on rank 1's node-local copy
mkdir -p node0 node1 && cp "$data" node0/demo.h5 && cp "$data" node1/demo.h5
"$pyh5" -c '
import h5py
with h5py.File("node1/demo.h5", "r+") as f:
    f["tasks/arith/train/offsets"][-1] = 5  # HDF5 updates the chunk checksum
' || fail "cannot corrupt node1/demo.h5"
one=("$bin" train "$exp" --set data.files=[demo.h5] --set experiment.out_dir=out)
set -m
"$mpiexec" "${flags[@]}" -n 1 --wdir "$work/node0" "${one[@]}" : \
    -n 1 --wdir "$work/node1" "${one[@]}" >corrupt.log 2>&1 &
job=$!
set +m
ends_within $job 20
grep "^omnimoe:" corrupt.log
[[ $rc -eq 2 ]] || fail "corrupt data on rank 1: exit $rc, expected 2"
grep -q '^omnimoe: \[rank 1\] demo.h5: /tasks/arith/train/offsets runs from 0 to 5, but tokens has' \
    corrupt.log || fail "rank 1's message is not printed"
[[ $(grep -c '^omnimoe:' corrupt.log) -eq 1 ]] || fail "the message is not printed once"
[[ ! -e node0/out && ! -e node1/out ]] || fail "the failed job left an out_dir"

# 2. rank 0's disk full mid-run
mkdir -p full && ln -s /dev/full full/metrics.jsonl
start 2 full
ends_within $job 20
[[ $rc -eq 1 ]] || fail "disk full on rank 0: exit $rc, expected 1"
grep -q '^step 1/20 ' full.log || fail "the job did not train before the fault"
grep -q '^omnimoe: full/metrics.jsonl: write failed: No space left on device' full.log ||
    fail "no message for the full disk: $(grep omnimoe: full.log)"
[[ ! -e full/ckpt-00000001.h5 ]] || fail "a checkpoint was written after the failure"

# 3. rank 1 killed mid-run
start 2 killed --set optim.steps=100000
wait_lines killed/metrics.jsonl 3 30 || fail "no training seen: $(tail -n 5 killed.log)"
victim=$(rank_pid $job 1) || fail "rank 1 not found among the children of $job"
kill -9 "$victim"
t0=$(date +%s%N)
ends_within $job 20
echo "job ended $(( ($(date +%s%N) - t0) / 1000000 )) ms after SIGKILL of rank 1, exit $rc"
[[ $rc -ne 0 ]] || fail "the job of a killed rank exited 0"
grep -q 'signal 9' killed.log || fail "mpirun did not report the killed rank"
echo "ok: each fault ended the job with its message and a non-zero status"
