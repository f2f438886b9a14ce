#!/usr/bin/env bash
# Task identity end to end (issue 16), on datasets written by h5py whose task order in the
# file (zeta 0, alpha 1) is not h5py's alphabetical one:
#  - with data.tasks empty, and with data.tasks reordered, on 1 and 2 processes, every
#    per-task number (step and eval lines, metrics.jsonl) is keyed by its own task: a
#    task never drawn (weight 1e-6) is the one with no training values, the task without
#    validation samples the one with no eval values; the checkpoint's task table has the
#    sampler's indices; 1 and 2 processes log the same numbers;
#  - resume compares the task table and refuses another (exit 2, naming the tasks);
#    --remap-tasks carries tasks over by name (their embedding rows and head columns move
#    to their new index), starts a new task afresh, and refuses a task whose kind changed.
. "$(dirname "$0")/lib.sh"

h5py=/usr/bin/python3
"$h5py" -c 'import h5py' 2>/dev/null || fail "h5py is not installed for $h5py (python3-h5py)"
write="$src/tests/data/write_tasks.py"
"$h5py" "$write" two.h5 zeta alpha:n || fail "writing two.h5"
"$h5py" "$write" three.h5 zeta alpha:n mid:c || fail "writing three.h5"
"$h5py" "$write" kind.h5 zeta:c alpha:n || fail "writing kind.h5"
short=(--set optim.steps=3 --set data.files=[two.h5])

# py SCRIPT ARGS...: run a Python check with h5py available.
py_check() {
    "$h5py" - "$@" || fail "check failed: $*"
}

# keys RUN TRAIN_NULL EVAL_NULL ORDER...: metrics.jsonl of RUN has task keys ORDER in
# that order everywhere; task TRAIN_NULL ("" for none) has no training value in any
# step, every other task has one in some step; EVAL_NULL is the one task without eval
# values.
keys() {
    py_check "$@" <<'PY'
import json, sys
run, train_null, eval_null, order = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
seen = {t: False for t in order}
n_eval = 0
with open(f"{run}/metrics.jsonl") as f:
    for line in f:
        obj = json.loads(line)
        fields = ["task_loss", "task_accuracy"] if obj.get("eval") else ["task_loss"]
        for field in fields:
            got = list(obj[field])
            assert got == order, f"{run}: {field} keys {got}, expected {order}"
        if obj.get("eval"):
            n_eval += 1
            for t in order:
                null = obj["task_loss"][t] is None
                assert null == (t == eval_null), f"{run}: eval of {t}: {obj['task_loss'][t]}"
        else:
            for t, v in obj["task_loss"].items():
                if t == train_null:
                    assert v is None, f"{run}: step {obj['step']}: {t} = {v}, never drawn"
                seen[t] |= v is not None
assert n_eval == 1, f"{run}: {n_eval} eval objects"
for t in order:
    assert seen[t] == (t != train_null), f"{run}: training values of {t}: {seen[t]}"
print(f"{run}: tasks {order} keyed right")
PY
}

# table CKPT NAME=INDEX...: the checkpoint's task table.
table() {
    py_check "$@" <<'PY'
import sys, h5py
path, want = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
with h5py.File(path, "r") as f:
    t = f["tokenization"]
    got = {n: int(g.attrs["index"]) for n, g in t["tasks"].items()}
    assert got == {n: int(i) for n, i in want.items()}, f"{path}: task table {got}"
    for n, g in t["tasks"].items():
        assert g.attrs["token"] == t.attrs["tok_task0"] + g.attrs["index"]
    assert t.attrs["n_tasks"] == len(want) and t.attrs["vocab"] == t.attrs["tok_task0"] + len(want)
print(f"{path}: task table {want}")
PY
}

# 1. data.tasks empty: the file's tasks in its order, on 1 and 2 processes.
for np in 1 2; do
    must_train $np empty$np "${short[@]}" --set 'data.tasks={}'
    grep -qE '^step 1/3 \| lr [^|]+\| loss [0-9.]+ \| zeta [0-9.]+ alpha [0-9.]+ \|' empty$np.log ||
        fail "empty$np: step line: $(grep '^step 1/' empty$np.log)"
    grep -qE '^eval step 3 \| zeta loss [0-9.]+ acc [0-9.]+ \| alpha - \|$' empty$np.log ||
        fail "empty$np: eval line: $(grep '^eval' empty$np.log)"
    keys empty$np "" alpha zeta alpha
    table empty$np/ckpt-00000003.h5 zeta=0 alpha=1
done
check close empty1/metrics.jsonl empty2/metrics.jsonl --rtol 1e-4

# 2. data.tasks reordered, zeta almost never drawn: its training values are the null ones.
for np in 1 2; do
    must_train $np order$np "${short[@]}" --set 'data.tasks={alpha: 1, zeta: 1.0e-6}'
    grep -qE '^step 3/3 \| lr [^|]+\| loss [0-9.]+ \| alpha [0-9.]+ zeta - \|' order$np.log ||
        fail "order$np: step line: $(grep '^step 3/' order$np.log)"
    grep -qE '^eval step 3 \| alpha - \| zeta loss [0-9.]+ acc [0-9.]+ \|$' order$np.log ||
        fail "order$np: eval line: $(grep '^eval' order$np.log)"
    keys order$np zeta alpha alpha zeta
    table order$np/ckpt-00000003.h5 alpha=0 zeta=1
done
check close order1/metrics.jsonl order2/metrics.jsonl --rtol 1e-4
ckpt=order1/ckpt-00000003.h5

# 3. Resume: another task table is refused, naming the tasks, and nothing is written.
# expect_bad NAME PATTERN [flags...]: exit 2, the one error message matches PATTERN.
expect_bad() {
    local name=$1 pattern=$2
    shift 2
    cmdline 2 $name "$@"
    "${cmd[@]}" >$name.log 2>&1
    local rc=$?
    [[ $rc -eq 2 ]] || fail "$name: exit $rc, expected 2: $(tail -n 5 $name.log)"
    [[ $(grep '^omnimoe:' $name.log | grep -vc '^omnimoe: warning:') -eq 1 ]] ||
        fail "$name: not exactly one error message: $(cat $name.log)"
    grep -qE "^omnimoe: $pattern" $name.log ||
        fail "$name: message '$(grep '^omnimoe:' $name.log)' does not match '$pattern'"
    ! grep -q '^step ' $name.log || fail "$name: it trained"
    [[ ! -e $name/ckpt-00000003.h5 && ! -e $name/ckpt-00000004.h5 ]] || fail "$name: wrote a checkpoint"
    echo "$name: $(grep '^omnimoe:' $name.log)"
}
expect_bad swapped "$ckpt: the tasks of the data are not the checkpoint's: task alpha has index 0 in the checkpoint, 1 in the data; task zeta has index 1 in the checkpoint, 0 in the data\. .*--remap-tasks" \
    "${short[@]}" --set 'data.tasks={zeta: 1, alpha: 1}' --resume $ckpt
expect_bad added "$ckpt: the tasks of the data are not the checkpoint's: .*task mid \(index 2\) is not in the checkpoint" \
    --set optim.steps=4 --set data.files=[three.h5] --set 'data.tasks={}' --resume $ckpt
expect_bad kind "$ckpt: task zeta is a text_to_text task \(obs_dim 0, act_dim 0\) in the checkpoint, a control task \(obs_dim 2, act_dim 1\) in the data" \
    --set optim.steps=4 --set data.files=[kind.h5] --set 'data.tasks={alpha: 1, zeta: 1}' \
    --resume $ckpt --remap-tasks
expect_bad usage "train: --remap-tasks needs --resume" "${short[@]}" --remap-tasks

# 4. --remap-tasks: zeta 1 -> 0, alpha 0 -> 1, mid new; one step at a tiny learning rate,
# so every carried-over value stays within 1e-4 of the checkpoint's.
must_train 2 remap --set optim.steps=4 --set data.files=[three.h5] --set 'data.tasks={}' \
    --set optim.lr=1.0e-6 --set optim.min_lr=1.0e-7 --resume $ckpt --remap-tasks
grep -q -- '--remap-tasks: zeta 1 -> 0, alpha 0 -> 1, mid new (index 2)' remap.log ||
    fail "remap: $(grep -- '--remap' remap.log)"
grep -qE '^step 4/4 \| lr [^|]+\| loss [0-9.]+ \| zeta [0-9.-]+ alpha [0-9.-]+ mid [0-9.-]+ \|' remap.log ||
    fail "remap: step line: $(grep '^step 4/' remap.log)"
table remap/ckpt-00000004.h5 zeta=0 alpha=1 mid=2
py_check $ckpt remap/ckpt-00000004.h5 <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
    t0 = int(a["tokenization"].attrs["tok_task0"])
    old_emb, new_emb = a["params/embed/tok"][()], b["params/embed/tok"][()]
    old_head, new_head = a["params/head/w"][()], b["params/head/w"][()]
    assert old_emb.shape[0] == t0 + 2 and new_emb.shape[0] == t0 + 3, (old_emb.shape, new_emb.shape)
    near = lambda x, y: np.abs(x - y).max() < 1e-4
    assert near(old_emb[:t0], new_emb[:t0]) and near(old_head[:, :t0], new_head[:, :t0])
    for new, old in ((0, 1), (1, 0)):   # zeta, alpha
        assert near(new_emb[t0 + new], old_emb[t0 + old]), f"embedding row of task {new}"
        assert not near(new_emb[t0 + new], old_emb[t0 + new]), f"row {new} did not move"
        assert near(new_head[:, t0 + new], old_head[:, t0 + old]), f"head column of task {new}"
    for old in (0, 1):                  # mid is new: none of the old rows
        assert not near(new_emb[t0 + 2], old_emb[t0 + old])
print("remap: rows and columns moved with their tasks; the new task has its own")
PY
echo "ok: per-task numbers keyed by task name and index; resume checks the task table"
