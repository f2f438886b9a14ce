#!/usr/bin/env bash
# omnimoe report on short demo-like runs (issue 13): two runs (1 and 2 processes) drawn
# together are one well-formed XHTML page (parsed by python3's xml.etree) holding every
# figure with its title, axes and legend, the heatmaps at the last and the chosen step and
# the effective experiments. Bad input exits 2 with the file and the fault named, and
# leaves no file under --out (nor a temporary one); an old run without routing tables still
# draws its curves.
#   page.sh MPIEXEC WORKDIR      (env OMNIMOE, OMNI_SOURCE_DIR; the train_data fixture)
. "$(dirname "$0")/../lib/common.sh"
mpiexec=$1 work=$2
data=$OMNI_BINARY_DIR/tests/train/demo.h5
rm -rf "$work" && mkdir -p "$work" && cd "$work" || fail "cannot make $work"

train() { # train NP OUT [--set ...]
    local np=$1 out=$2
    shift 2
    "$mpiexec" -n "$np" "${flags[@]}" "$bin" train "$src/tests/train/tiny.yaml" \
        --set "data.files=[$data]" --set "experiment.out_dir=$out" --set optim.steps=8 \
        --set log.every=2 --set eval.every=4 "$@" >"$out.log" 2>&1 || {
        tail -20 "$out.log" >&2
        fail "training $out failed"
    }
}
train 1 a --set eval.generate=2 # exact match of 2 greedy captions per task
train 2 b --set experiment.seed=8 --set moe.capacity_factor=1.0

"$bin" report a b --out report.html --step 4 >report.log 2>&1 || fail "report: $(cat report.log)"
grep -q "^report: report.html" report.log || fail "report did not say where: $(cat report.log)"
python3 - report.html a/metrics.jsonl b/metrics.jsonl <<'PY' || fail "report.html is not the page expected"
import json, sys
import xml.etree.ElementTree as ET

X, S = "{http://www.w3.org/1999/xhtml}", "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()  # raises on anything not well-formed
assert root.tag == X + "html", root.tag
svgs = root.findall(f".//{S}svg")
titles = [s.find(f"{S}title").text for s in svgs]
for t in ("Training loss per task", "Validation loss per task", "Validation next-token accuracy",
          "Exact match of generated outputs",
          "Learning rate", "Dropped assignments (over capacity)",
          "Expert load balance per MoE layer"):
    assert t in titles, f"no figure '{t}' in {titles}"
heat = [t for t in titles if "\u00d7 expert (% kept)" in t]
# 2 runs x 2 snapshots (last, --step) x 2 layers x (task, modality)
assert len(heat) == 16, heat
for s in svgs:
    assert s.get("viewBox"), "an svg without viewBox"
    texts = ["".join(e.itertext()) for e in s.iter(f"{S}text")]
    title = s.find(f"{S}title").text
    if "\u00d7 expert" in title:
        rows = {"task": ["shapes", "tones", "arith", "cartpole"],
                "modality": ["text", "image", "audio", "control"]}["task" if "task" in title else "modality"]
        side = "dropped (%)" if "dropped" in title else "entropy"
        for r in rows + ["e0", "e3", side]:
            assert r in texts, f"{title}: no label {r}"
    elif "no values logged" not in texts:
        assert "step" in texts, f"{title}: no x axis label"
        assert any(t.endswith(")") or t == "learning rate" for t in texts), f"{title}: no unit"
# The first layer-0 task heatmap is run a's at its last logged step: each cell is the
# expert's share (%) of the task's kept assignments in metrics.jsonl, the right-hand column
# the task's mean-distribution entropy.
last = [json.loads(l) for l in open(sys.argv[2]) if '"eval"' not in l][-1]
svg = next(s for s in svgs if s.find(f"{S}title").text.startswith("MoE layer 0: task"))
texts = ["".join(e.itertext()) for e in svg.iter(f"{S}text")]
got = texts[texts.index("entropy") + 1:]
want = []
for task, row in last["task_expert_load"][0].items():
    total = sum(row)
    want += [task] + [f"{100 * v / total:.0f}" for v in row]
    want.append(f"{last['task_mean_entropy'][0][task]:.2f}")
assert got[:len(want)] == want, f"heatmap cells {got[:len(want)]}, metrics.jsonl {want}"
# Where run b (capacity 1.0) dropped: its first layer-0 drop map is at its last logged
# step; each cell the share (%) of the task's assignments to the expert that were dropped
# (blank: none), beside it the task's dropped share. Run a is dropless: no drop map.
drops = [s for s in svgs if "(% dropped)" in s.find(f"{S}title").text]
assert drops, "no drop map for run b"
lastb = [json.loads(l) for l in open(sys.argv[3]) if '"eval"' not in l][-1]
svg = next(s for s in drops if s.find(f"{S}title").text.startswith("MoE layer 0:"))
texts = ["".join(e.itertext()) for e in svg.iter(f"{S}text")]
got = texts[texts.index("dropped (%)") + 1:]
want = []
for task, kept in lastb["task_expert_load"][0].items():
    drop = lastb["task_expert_drop"][0][task]
    want.append(task)
    want += [f"{100 * d / (d + k):.0f}" for d, k in zip(drop, kept) if d + k > 0]
    want.append(f"{100 * sum(drop) / (sum(drop) + sum(kept)):.2f}")
assert sum(map(sum, lastb["task_expert_drop"][0].values())) > 0, "run b dropped nothing"
assert got[:len(want)] == want, f"drop map {got[:len(want)]}, metrics.jsonl {want}"
page = ET.tostring(root, encoding="unicode")
assert page.index("(% dropped)") > page.index("b, step 8 (last logged)"), "a drop map for run a"
text = "".join(root.itertext())
for want in ("run a", "run b", "step 8 (last logged)", "step 4 (--step)", "num_experts: 4",
             "shapes", "cartpole"):
    assert want in text, f"no '{want}' on the page"
print(f"report.html: {len(svgs)} figures, {len(heat)} heatmaps, well-formed")
PY

# expect CODE TEXT -- ARGS...: omnimoe report ARGS exits CODE and says TEXT
expect() {
    local code=$1 text=$2
    shift 3
    out=$("$bin" report "$@" 2>&1)
    local got=$?
    [[ $got == "$code" ]] || fail "report $* exited $got, expected $code: $out"
    grep -qF -- "$text" <<<"$out" || fail "report $* does not say '$text': $out"
    echo "ok ($got): report $*"
}
mkdir empty
expect 2 "empty/metrics.jsonl: cannot read" -- empty --out x.html
expect 2 "nosuch/metrics.jsonl: cannot read: No such file" -- nosuch --out x.html
mkdir -p isdir/metrics.jsonl
expect 2 "isdir/metrics.jsonl: read error" -- isdir --out x.html
# a bad line in the middle is named by its number, whatever follows it
mkdir mid && sed '3s/.*/{"step": 3, "loss": 1.0, "lr"/' a/metrics.jsonl >mid/metrics.jsonl
expect 2 "mid/metrics.jsonl:3: not JSON" -- mid --out x.html
mk() { # mk DIR LINE: a copy of run a with LINE appended to its metrics.jsonl
    mkdir -p "$1" && cp a/metrics.jsonl "$1/" && printf '%s\n' "$2" >>"$1/metrics.jsonl"
}
n=$(($(wc -l <a/metrics.jsonl) + 1))
mk trunc '{"step": 10, "lr": 0.001, "loss": 6.9, "task_lo'
expect 2 "trunc/metrics.jsonl:$n: not JSON" -- trunc --out x.html
# without its newline, the same truncated line is one the run is still writing: skipped
mkdir live && cp a/metrics.jsonl live/ && printf '%s' '{"step": 10, "lr": 0.001, "los' >>live/metrics.jsonl
expect 0 "live/metrics.jsonl:$n: an unfinished last line" -- live --out live.html
grep -q "step 8 (last logged)" live.html || fail "the live run's finished lines are not drawn"
# a foreign step near 2^63, where adding an axis step does not change a double: drawn, no hang
mkdir far && echo '{"step": 9000000000000000000, "loss": 1.0, "load_max_over_mean": [1.0]}' >far/metrics.jsonl
timeout 60 "$bin" report far --out far.html >far.log 2>&1 || fail "report far: exit $?: $(cat far.log)"
echo "ok (0): report far (step 9e18)"
mk foreign '[1, 2, 3]'
expect 2 "foreign/metrics.jsonl:$n: not a metrics object" -- foreign --out x.html
mk badtype '{"step": 10, "loss": "high"}'
expect 2 "badtype/metrics.jsonl:$n: field \"loss\" is not a number or null" -- badtype --out x.html
mk badtable '{"step": 10, "task_expert_load": {"a": 1}}'
expect 2 "field \"task_expert_load\" is not a list" -- badtable --out x.html
train 1 dense --set moe.every=0
expect 2 "dense/metrics.jsonl: the run has no MoE layer" -- dense --out x.html
expect 2 "/proc/no/such/report.html: cannot write there" -- a --out /proc/no/such/report.html
expect 2 "no run logged routing tables at or before" -- a --step 1 --out x.html
expect 2 "unknown option '--outt'" -- a --outt x.html
expect 2 "no run directory given" -- --out x.html
[[ ! -e x.html ]] || fail "a failed report left x.html"
echo keep >kept.html
expect 2 "not JSON" -- trunc --out kept.html
[[ $(cat kept.html) == keep ]] || fail "a failed report changed an existing page"
ls ./*.tmp.* >/dev/null 2>&1 && fail "temporary files left: $(ls ./*.tmp.*)"

# a dense run beside an MoE run is drawn; an old run without routing tables draws its curves
expect 0 "report: both.html" -- a dense --out both.html
grep -q "a dense model, no routing" both.html || fail "no dense-model note"
mkdir old && python3 - a/metrics.jsonl old/metrics.jsonl <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        o = json.loads(line)
        for k in [k for k in o if k.startswith(("task_expert", "modality_", "task_", "dead_"))]:
            if k not in ("task_loss", "task_accuracy"):
                del o[k]
        out.write(json.dumps(o) + "\n")
PY
expect 0 "report: old.html" -- old --out old.html
grep -q "has no routing tables" old.html || fail "no note for an old run"
grep -q "Training loss per task" old.html || fail "the old run's curves are not drawn"
grep -qF "No readable checkpoint in the run directory (old: no complete checkpoint)" old.html ||
    fail "the old run's missing experiment is not said"
# an expert that kept nothing in the window is marked dead on its column
mkdir deadrun && python3 - a/metrics.jsonl deadrun/metrics.jsonl <<'PY' || fail "making deadrun"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
last = max(i for i, o in enumerate(lines) if "eval" not in o)
lines[last]["dead_experts"] = [[2], []]
with open(sys.argv[2], "w") as out:
    out.writelines(json.dumps(o) + "\n" for o in lines)
PY
expect 0 "report: dead.html" -- deadrun --out dead.html
python3 - dead.html <<'PY' || fail "dead experts are not marked"
import sys
import xml.etree.ElementTree as ET
S = "{http://www.w3.org/2000/svg}"
svgs = ET.parse(sys.argv[1]).getroot().findall(f".//{S}svg")
heat = {s.find(f"{S}title").text: ["".join(e.itertext()) for e in s.iter(f"{S}text")]
        for s in svgs if "\u00d7 expert" in s.find(f"{S}title").text}
l0 = [t for k, t in heat.items() if k.startswith("MoE layer 0")]
l1 = [t for k, t in heat.items() if k.startswith("MoE layer 1")]
assert l0 and l1, heat.keys()
assert all(t.count("dead") == 1 for t in l0), l0
assert all("dead" not in t for t in l1), l1
PY
# a damaged checkpoint costs the experiment section only: the page is drawn, and says why
mkdir damaged && cp a/metrics.jsonl damaged/ && head -c 4000 a/ckpt-00000008.h5 >damaged/ckpt-00000008.h5
expect 0 "skipping damaged/ckpt-00000008.h5: damaged or truncated HDF5 file" -- damaged --out damaged.html
grep -qF "No readable checkpoint in the run directory (damaged: no complete checkpoint)" damaged.html ||
    fail "the damaged checkpoint is not said"
echo "ok: report page"
