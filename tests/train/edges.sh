#!/usr/bin/env bash
# The rough edges of `omnimoe train` a new user hits (issue 16), through the binary:
#  - a missing data file names its key and says paths are relative to the working
#    directory; the one error line is all the output (no configuration printed before);
#  - the same task name in two data files is refused with advice that works;
#  - optim.warmup left at its default and above optim.steps says it is the default;
#  - "1 MoE layer" in the singular;
#  - a run stopped by a signal says so, with its checkpoint and how to resume, not "done".
. "$(dirname "$0")/lib.sh"

# expect_fail NAME CODE PATTERN [train flags...]: exit CODE, one error line matching
# PATTERN (beside mpiexec's own notice), and nothing on stdout.
expect_fail() {
    local name=$1 code=$2 pattern=$3
    shift 3
    cmdline 1 $name "$@"
    "${cmd[@]}" >$name.out 2>$name.err
    local rc=$?
    [[ $rc -eq $code ]] || fail "$name: exit $rc, expected $code: $(cat $name.err)"
    [[ $(grep '^omnimoe:' $name.err | grep -vc '^omnimoe: warning:') -eq 1 ]] ||
        fail "$name: expected one error line: $(cat $name.err)"
    grep -qE "^omnimoe: $pattern" $name.err || fail "$name: '$(cat $name.err)' does not match '$pattern'"
    [[ ! -s $name.out ]] || fail "$name: printed before failing: $(head -n 5 $name.out)"
    echo "$name: $(cat $name.err)"
}

expect_fail missing 2 "data.files\[1\] = nope.h5: no such file; paths in data.files are relative to the working directory \($work\)" \
    --set "data.files=[$data, nope.h5]"
# The same file twice would count its samples twice (a task in several files is one task:
# tests/train/shards.sh).
expect_fail twice 2 "data.files\[1\] = .* is the file of data.files\[0\] \(.*\) again: list each file once" \
    --set "data.files=[$data, $data]"
expect_fail twice_all 2 "data.files\[1\] = .* is the file of data.files\[0\] \(.*\) again: list each file once" \
    --set "data.files=[$data, $data]" --set "data.tasks={}"

cat >nowarmup.yaml <<EOF
experiment: {name: nowarmup}
data: {files: [$data]}
optim: {steps: 60}
EOF
"$bin" train nowarmup.yaml >warmup.out 2>warmup.err
rc=$?
[[ $rc -eq 2 ]] || fail "warmup: exit $rc, expected 2"
grep -q "optim.warmup = 100 (the default) exceeds optim.steps = 60, expected warmup <= steps: set optim.warmup" warmup.err ||
    fail "warmup: $(cat warmup.err)"
echo "warmup: $(cat warmup.err)"
"$bin" train nowarmup.yaml --set optim.warmup=100 >warmup2.out 2>warmup2.err
grep -q "optim.warmup = 100 exceeds optim.steps = 60, expected warmup <= steps$" warmup2.err ||
    fail "warmup set by the user: $(cat warmup2.err)"

# One MoE layer of two blocks; the configuration comes once the run is under way.
must_train 1 one --set optim.steps=2 --set moe.every=2
grep -q "4 tasks, 1 MoE layer of 4 experts$" one.log || fail "plural: $(grep '^training' one.log)"
[[ $(grep -n '^# omnimoe' one.log | cut -d: -f1) -lt $(grep -n '^training ' one.log | cut -d: -f1) ]] ||
    fail "the configuration is not printed above the training line"

# A signal: stopped, not done.
start 2 sig --set optim.steps=100000 --set log.every=1
wait_lines sig/metrics.jsonl 2 120 || { kill -9 -- -$job; fail "sig: no steps logged"; }
kill -s USR1 $job
ends_within $job 120
[[ $rc -eq 0 ]] || fail "sig: exit $rc, expected 0: $(tail -n 5 sig.log)"
last=$(tail -n 1 sig.log)
re='^stopped at step ([0-9]+) of 100000 by SIGUSR1; checkpoint sig/ckpt-0*([0-9]+)\.h5; resume with --resume auto$'
[[ $last =~ $re ]] || fail "sig: last line '$last'"
[[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] || fail "sig: step and checkpoint differ: $last"
! grep -q '^done:' sig.log || fail "sig: said done"
echo "sig: $last"
echo "ok: the rough edges of train are smooth"
