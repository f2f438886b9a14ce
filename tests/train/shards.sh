#!/usr/bin/env bash
# A task spanning several shard files (issue 15): the demo dataset cut into 3 shard files (and
# into 40, more than a process keeps open; one shard without training samples of a task) —
# each task's train and validation samples split into 3 contiguous runs, one per file —
# trains exactly as the one file does (bit-identical per-step losses, 1 and 2 processes) and
# evaluates on the same fixed validation windows (identical eval losses): the sampler sees a
# task as its shards one after another. Bad shards end with exit status 2 naming the file
# and the fault: a file listed twice, a shard whose task has another kind, a missing shard,
# a shard of format version 1.
. "$(dirname "$0")/lib.sh"
pyh5=/usr/bin/python3
"$pyh5" -c 'import h5py' 2>/dev/null || fail "h5py is needed ($pyh5, Debian's python3-h5py)"

# cut K PREFIX: the demo in K shard files PREFIX0.h5 ... (each task's splits in K runs)
cut() {
"$pyh5" - "$data" "$1" "$2" <<'PY' || fail "cannot cut the demo into $1 shards"
import h5py, numpy as np, sys
def put(g, name, a):
    rows = max(1, min(len(a), 65536 // (a.itemsize * (a.shape[1] if a.ndim == 2 else 1))))
    g.create_dataset(name, data=a, maxshape=(None,) + a.shape[1:], chunks=(rows,) + a.shape[1:],
                     fletcher32=True)
src = h5py.File(sys.argv[1], "r")
K = int(sys.argv[2])
outs = [h5py.File(f"{sys.argv[3]}{k}.h5", "w") for k in range(K)]
for o in outs:
    for a, v in src.attrs.items():
        o.attrs[a] = v
for name, t in src["tasks"].items():
    gs = [o.create_group(f"tasks/{name}") for o in outs]
    for g in gs:
        for a, v in t.attrs.items():
            g.attrs[a] = v
    for split in ("train", "val"):
        s = t[split]
        off = s["offsets"][()]
        n = len(off) - 1
        cuts = [n * k // K for k in range(K + 1)]
        if K == 3 and name == "arith" and split == "train":
            cuts[2] = cuts[1]  # shard 1 holds no training sample of arith (allowed)
        for k, g in enumerate(gs):
            d = g.create_group(split)
            a, b = cuts[k], cuts[k + 1]
            put(d, "offsets", (off[a:b + 1] - off[a]).astype(np.int64))
            put(d, "tokens", s["tokens"][off[a]:off[b]])
            if "patches" in s:
                po = s["patch_offsets"][()]
                put(d, "patch_offsets", (po[a:b + 1] - po[a]).astype(np.int64))
                put(d, "patches", s["patches"][po[a]:po[b]])
for o in outs:
    o.close()
PY
}
cut 3 shard
shards="[shard0.h5, shard1.h5, shard2.h5]"
for np in 1 2; do
    must_train $np one-np$np --set eval.every=5 --set optim.steps=10
    must_train $np three-np$np --set eval.every=5 --set optim.steps=10 --set "data.files=$shards"
    check same one-np$np/metrics.jsonl three-np$np/metrics.jsonl
done
# More files than a process keeps open (DS_OPEN_FILES, 32): closed and opened again as read.
cut 40 many
many="[$(seq -s ', ' -f 'many%g.h5' 0 39)]"
must_train 1 forty-np1 --set eval.every=5 --set optim.steps=10 --set "data.files=$many"
check same one-np1/metrics.jsonl forty-np1/metrics.jsonl
for run in three-np1 three-np2 forty-np1; do # evaluation sums in the same order: same np
    np=${run##*-np}
    "$py" - one-np$np/metrics.jsonl $run/metrics.jsonl <<'PY' ||
import json, sys
def evals(p):
    return [{k: v for k, v in o.items() if "time" not in k and not k.endswith("_s")}
            for o in map(json.loads, open(p)) if o.get("eval")]
a, b = evals(sys.argv[1]), evals(sys.argv[2])
assert len(a) == 2 and a == b, (a, b)
PY
        fail "the validation losses of $run differ from those on one file"
done

expect_fail() { # NAME PATTERN FILES
    local st=0
    train 1 $1 --set "data.files=$3" || st=$?
    [[ $st -eq 2 ]] || fail "$1: exit status $st, expected 2: $(tail -3 $1.log)"
    grep -qE "omnimoe: .*$2" $1.log || fail "$1: no message '$2' in: $(tail -5 $1.log)"
    echo "$1: $(grep 'omnimoe: ' $1.log | head -1)"
}
expect_fail twice "data.files\[1\] = shard0.h5 is the file of data.files\[0\] \(shard0.h5\) again" \
    "[shard0.h5, shard0.h5]"
cp shard1.h5 kind.h5
"$pyh5" -c '
import h5py
with h5py.File("kind.h5", "r+") as f:
    f["tasks/arith"].attrs["kind"] = "text"
' || fail "cannot edit kind.h5"
expect_fail kind "kind.h5: task arith is text .* but in shard0.h5 it is text_to_text .*the shards of a task must hold the same kind" \
    "[shard0.h5, kind.h5]"
expect_fail missing "data.files\[2\] = shard9.h5: no such file" "[shard0.h5, shard1.h5, shard9.h5]"
cp shard2.h5 v1.h5
"$pyh5" -c '
import h5py
with h5py.File("v1.h5", "r+") as f:
    f.attrs["format_version"] = 1
' || fail "cannot edit v1.h5"
expect_fail version "v1.h5: dataset format_version 1 is not read" "[shard0.h5, shard1.h5, v1.h5]"
echo "ok: one file, its 3 shards and its 40 shards train and evaluate alike"
