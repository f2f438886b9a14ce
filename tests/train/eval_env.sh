#!/usr/bin/env bash
# Training's rollouts (eval.env, issue 10): at each evaluation the model plays the built-in
# cart-pole; the eval line and metrics.jsonl carry the mean return, the same on 1 and 2
# processes (greedy decoding of the same parameters, the same starts). A bad eval.env is
# refused before step 1 with exit 2, the key named, and no run directory written.
. "$(dirname "$0")/lib.sh"
roll=(--set eval.env=cartpole --set eval.episodes=2 --set eval.max_steps=50 --set eval.every=5
    --set optim.steps=10)

must_train 1 one "${roll[@]}"
must_train 2 two "${roll[@]}"
for r in one two; do
    [[ $(grep -c "^eval step .* cartpole loss [0-9.]* acc [0-9.]* return [0-9.]* |" $r.log) -eq 2 ]] ||
        fail "$r: expected 2 eval lines with a cartpole return: $(grep '^eval' $r.log)"
done
"$py" - one/metrics.jsonl two/metrics.jsonl <<'PY' || fail "task_return"
import json, sys
runs = []
for path in sys.argv[1:]:
    ev = [json.loads(l) for l in open(path) if '"eval": true' in l]
    assert [e["step"] for e in ev] == [5, 10], (path, [e["step"] for e in ev])
    for e in ev:
        r = e["task_return"]
        assert list(r) == ["cartpole"], (path, r)
        # 2 episodes of at most 50 steps, reward 1 per step
        assert 1 <= r["cartpole"] <= 50, (path, r)
    runs.append([e["task_return"]["cartpole"] for e in ev])
assert runs[0] == runs[1], ("1 and 2 processes differ", runs)
print("returns", runs[0])
PY

# The report draws the returns over the steps.
"$bin" report one --out one.html >report.log 2>&1 || fail "report: $(cat report.log)"
grep -q "Mean return per episode (eval.env rollouts)" one.html || fail "no return chart in one.html"

# Without eval.env no rollouts and no task_return.
must_train 1 plain --set optim.steps=5 --set eval.every=5
! grep -q task_return plain/metrics.jsonl || fail "task_return without eval.env"

# refused CASE MESSAGE FLAGS...: exit 2, MESSAGE in the output, no run directory.
refused() {
    local name=$1 msg=$2
    shift 2
    train 2 "$name" "$@"
    local rc=$?
    [[ $rc -eq 2 ]] || fail "$name: exit $rc, expected 2: $(tail -n 3 $name.log)"
    grep -qF -- "$msg" $name.log || fail "$name: no '$msg' in: $(tail -n 3 $name.log)"
    [[ ! -e $name ]] || fail "$name: the refused run wrote $name/"
    echo "$name: $(grep -F -- "$msg" $name.log | head -n 1)"
}
refused nocmd "eval.env = /nonexistent/env does not work for task cartpole" \
    --set eval.env=/nonexistent/env
refused notcontrol "eval.env_task = shapes is not a control task of the data (its control tasks: cartpole)" \
    --set eval.env=cartpole --set eval.env_task=shapes
refused nocontrol "the data has no control task to play in it" \
    --set eval.env=cartpole --set "data.tasks={shapes: 1}"
refused noenv "eval.env_task = cartpole names a task to play, but eval.env is empty" \
    --set eval.env_task=cartpole
refused wrongshape "does not work for task cartpole: " \
    --set "eval.env=python3 $src/tests/inference/fault_env.py ok 2"
# A command environment that works is used as it is (fault_env.py ok: 5 steps, reward = action).
must_train 1 cmd --set "eval.env=python3 $src/tests/inference/fault_env.py ok" --set eval.episodes=2 \
    --set optim.steps=5 --set eval.every=5
grep -q '"task_return": {"cartpole": [0-5]' cmd/metrics.jsonl || fail "cmd: $(grep eval cmd/metrics.jsonl)"
echo "ok: eval.env rollouts in the eval line and metrics.jsonl, same on 1 and 2 processes; bad eval.env refused"
