#!/usr/bin/env bash
# Routing statistics in checkpoints (issue 13): a checkpoint keeps the task and modality
# tables of the last logged window, equal to the last training object of metrics.jsonl,
# and `omnimoe ckpt info` prints them, rows named by the checkpoint's task table; tables
# that do not fit it are exit 2; a dense model's checkpoint has none and says so.
. "$(dirname "$0")/lib.sh"

# data.tasks empty: every task of the data file, so the experiment names no task and only
# the checkpoint's task table (/tokenization) can name the rows.
must_train 2 rt --set optim.steps=4 --set log.every=2 --set "data.tasks={}"
ckpt=rt/ckpt-00000004.h5
h5py=/usr/bin/python3 # Debian's python3-h5py (scripts/deps --test)
"$h5py" -c 'import h5py' || fail "h5py is not installed for $h5py (apt-get install python3-h5py)"
"$h5py" - "$ckpt" rt/metrics.jsonl <<'PY' || fail "checkpoint tables differ from metrics.jsonl"
import json, sys
import h5py
f = h5py.File(sys.argv[1], "r")
last = [json.loads(l) for l in open(sys.argv[2]) if '"eval"' not in l][-1]
g = f["state/coordinator/routing"]
assert list(g["steps"][()]) == [3, 4], g["steps"][()]
for table in ("task", "modality"):
    for field in ("load", "drop", "prob"):
        want = last[f"{table}_expert_{field}"]
        got = g[f"{table}_expert_{field}"][()]
        for l, layer in enumerate(want):
            for i, (name, row) in enumerate(layer.items()):
                row = [0.0 if v is None else v for v in row]
                assert list(got[l, i]) == row, (table, field, l, name, list(got[l, i]), row)
    tokens = g[f"{table}_tokens"][()]
    for i, (name, v) in enumerate(last[f"{table}_tokens"].items()):
        assert tokens[0, i] == v, (table, name, tokens[0, i], v)
print("checkpoint routing tables equal the last metrics.jsonl object")
PY
out=$("$bin" ckpt info "$ckpt") || fail "ckpt info failed: $out"
grep -q "^routing (token->expert assignments kept per step.*steps 3\.\.4" <<<"$out" ||
    fail "no routing table in: $out"
# Every task row of every layer, by name and in the table's order, as metrics.jsonl has it
# (one decimal).
want=$("$py" -c '
import json, sys
last = [json.loads(l) for l in open(sys.argv[1]) if "\"eval\"" not in l][-1]
for layer in last["task_expert_load"]:
    for name, row in layer.items():
        print(name, " ".join(f"{v:.1f}" for v in row))' rt/metrics.jsonl)
got=$(awk '/^    task /{on=1; next} /^    modality /{on=0} on{print $1, $2, $3, $4, $5}' <<<"$out")
# The demo file's seven tasks (shapes_qa and gridworld since issue 17, gridworld_vec since
# its vector-vs-pixel comparison).
[[ $(wc -l <<<"$want") == 14 ]] || fail "expected 7 tasks x 2 layers in metrics.jsonl: $want"
[[ "$got" == "$want" ]] || fail "ckpt info task rows:
$got
metrics.jsonl:
$want"
grep -q "^    control " <<<"$out" || fail "no modality rows in: $out"

# A resumed run restores the tables: a checkpoint it writes before logging again (step 5:
# log.every 10) carries those of the window before the resume, and the next logged window
# (steps 5..6) replaces them.
must_train 2 rt --set optim.steps=6 --set log.every=10 --set checkpoint.every=1 \
    --set "data.tasks={}" --resume auto
"$h5py" - rt/ckpt-00000004.h5 rt/ckpt-00000005.h5 rt/ckpt-00000006.h5 <<'PY' ||
import sys
import h5py
g4, g5, g6 = (h5py.File(p, "r")["state/coordinator/routing"] for p in sys.argv[1:])
assert list(g5["steps"][()]) == [3, 4], g5["steps"][()]
for name in g4:
    assert (g4[name][()] == g5[name][()]).all(), name
assert list(g6["steps"][()]) == [5, 6], g6["steps"][()]
PY
    fail "the resumed run's checkpoints do not carry the right routing tables"

# Tables that do not fit the checkpoint's task table: a message naming file and fault.
"$h5py" - "$ckpt" rt/extra_row.h5 <<'PY' || fail "cannot make rt/extra_row.h5"
import shutil, sys
import h5py, numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    g = f["state/coordinator/routing"]
    t = g["task_expert_load"][()]
    del g["task_expert_load"]
    g["task_expert_load"] = np.concatenate([t, t[:, :1]], axis=1)
PY
out=$("$bin" ckpt info rt/extra_row.h5 2>&1)
[[ $? == 2 ]] || fail "ckpt info of a table with an extra task row did not exit 2: $out"
grep -qF "rt/extra_row.h5: state/coordinator/routing/task_expert_load has 8 task rows, its task table (/tokenization) 7 tasks" <<<"$out" ||
    fail "extra task row: $out"

must_train 1 dense --set moe.every=0 --set optim.steps=2
out=$("$bin" ckpt info dense/ckpt-00000002.h5) || fail "ckpt info of the dense model failed"
grep -q "^routing      none logged" <<<"$out" || fail "dense checkpoint: $out"
grep -q "task_expert_load" dense/metrics.jsonl && fail "a dense model logs routing tables"
echo "ok: routing tables in checkpoints and ckpt info"
