#!/usr/bin/env bash
# Routing statistics in checkpoints (issue 13): a checkpoint keeps the task and modality
# tables of the last logged window, equal to the last training object of metrics.jsonl,
# and `omnimoe ckpt info` prints them; a dense model's checkpoint has none and says so.
. "$(dirname "$0")/lib.sh"

must_train 2 rt --set optim.steps=4 --set log.every=2
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
# the cartpole row of layer 0, as metrics.jsonl has it (one decimal)
want=$("$py" -c '
import json, sys
last = [json.loads(l) for l in open(sys.argv[1]) if "\"eval\"" not in l][-1]
print(" ".join(f"{v:.1f}" for v in last["task_expert_load"][0]["cartpole"]))' rt/metrics.jsonl)
got=$(grep -m1 "^    cartpole " <<<"$out" | awk '{print $2, $3, $4, $5}')
[[ "$got" == "$want" ]] || fail "ckpt info cartpole row '$got', metrics.jsonl '$want'"
grep -q "^    control " <<<"$out" || fail "no modality rows in: $out"

must_train 1 dense --set moe.every=0 --set optim.steps=2
out=$("$bin" ckpt info dense/ckpt-00000002.h5) || fail "ckpt info of the dense model failed"
grep -q "^routing      none logged" <<<"$out" || fail "dense checkpoint: $out"
grep -q "task_expert_load" dense/metrics.jsonl && fail "a dense model logs routing tables"
echo "ok: routing tables in checkpoints and ckpt info"
