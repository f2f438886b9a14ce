#!/usr/bin/env bash
# docs/checkpoints.md against a real checkpoint (issue 16): every path of its layout
# block exists (block `ll` as some block of the run), every attribute of its tables is on
# its object, every tensor has its `meaning`, and its h5py example and HDF5-tool commands
# run as printed (the file name replaced by this run's checkpoint). So the doc and the
# files cannot drift apart again.
. "$(dirname "$0")/lib.sh"

h5py=/usr/bin/python3
"$h5py" -c 'import h5py' 2>/dev/null || fail "h5py is not installed for $h5py (python3-h5py)"
# Block 00 dense, block 01 MoE, auxiliary-loss-free bias on: every kind of tensor.
must_train 1 run --set optim.steps=2 --set moe.every=2 --set moe.bias_rate=0.001
ckpt=$work/run/ckpt-00000002.h5
[[ -f $ckpt ]] || fail "no checkpoint $ckpt"
doc=$src/docs/checkpoints.md

"$h5py" - "$doc" "$ckpt" <<'PY' || fail "docs/checkpoints.md does not match $ckpt"
import re, sys, h5py
doc, path = open(sys.argv[1]).read(), sys.argv[2]
section = lambda title: doc.split(title, 1)[1].split("\n## ", 1)[0]
checked = 0
with h5py.File(path, "r") as f:
    # The layout block: the first code block after "## Layout".
    layout = re.search(r"```\n(.*?)```", section("## Layout"), re.S).group(1)
    for line in layout.splitlines():
        for p in re.findall(r"(?:^|\s)(/[\w/]+)", line.split("[")[0]):
            if p == "/state/counters":   # documented as absent from training checkpoints
                assert p not in f, f"{p} is in a training checkpoint; the doc says it is not"
                continue
            p = p.rstrip("/")
            if "/optim/m/params" == p or "/optim/v/params" == p:
                assert p in f, p
                continue
            cands = [p.replace("/ll/", f"/{l:02d}/") for l in range(2)] if "/ll/" in p else [p]
            assert any(c in f for c in cands), f"{p} (as {cands}) is not in the checkpoint"
            checked += 1
    # Attribute tables: rows "| `a` ... |" of the root table and the tokenization table.
    def table_attrs(text):
        rows = re.findall(r"^\| (`[^|]*) \|", text, re.M)
        return [n for r in rows for n in re.findall(r"`(\w+)`", r)]
    root = table_attrs(section("## Layout").split("### The tokenization")[0])
    tok = table_attrs(section("### The tokenization"))
    assert "format" in root and "vocab" in tok and "audio_top_db" in tok, (root, tok)
    for a in root:
        assert a in f.attrs, f"root attribute {a} is missing"
    for a in tok:
        assert a in f["tokenization"].attrs, f"/tokenization attribute {a} is missing"
    checked += len(root) + len(tok)
    # The task groups' attributes, as the text names them.
    for name, g in f["tokenization/tasks"].items():
        for a in ("kind", "index", "token", "obs_dim", "act_dim", "discrete"):
            assert a in g.attrs, f"/tokenization/tasks/{name}: attribute {a} is missing"
            checked += 1
    # Every tensor says what its dimensions are.
    def visit(name, obj):
        global checked
        if isinstance(obj, h5py.Dataset):
            assert "meaning" in obj.attrs, f"/{name} has no meaning attribute"
            checked += 1
    f.visititems(visit)
print(f"docs/checkpoints.md: {checked} paths and attributes found in {path}")
PY

# The examples, as printed, on this checkpoint.
"$h5py" - "$doc" "$ckpt" >examples.sh <<'PY'
import re, sys
doc = open(sys.argv[1]).read()
for block in re.findall(r"```\n(.*?)```", doc, re.S):
    for line in block.splitlines():
        if line.startswith(("h5ls ", "h5dump ")):
            print(line.split("#")[0].replace("runs/demo/ckpt-00000200.h5", sys.argv[2]))
PY
[[ $(wc -l <examples.sh) -ge 6 ]] || fail "the HDF5-tool examples were not found: $(cat examples.sh)"
while read -r line; do
    bash -c "$line" >tool.out 2>&1 || fail "'$line' failed: $(tail -n 3 tool.out)"
done <examples.sh
"$h5py" - "$doc" "$ckpt" >example.py <<'PY'
import re, sys
code = re.search(r"```python\n(.*?)```", open(sys.argv[1]).read(), re.S).group(1)
print(code.replace("runs/demo/ckpt-00000200.h5", sys.argv[2]))
PY
"$h5py" example.py >example.out 2>&1 || fail "the h5py example failed: $(tail -n 5 example.out)"
grep -q "^shapes image_to_text 0 1283$" example.out || fail "h5py example output: $(cat example.out)"
echo "ok: docs/checkpoints.md paths, attributes and examples match a real checkpoint"
