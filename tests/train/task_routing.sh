#!/usr/bin/env bash
# Task routing (issue 14, moe.router: task): every token of a task takes its task's top-k
# experts (each task's row of the per-step task x expert table has exactly top_k experts
# used); 1, 2 and 4 processes agree to a relative 1e-4 over 20 steps (dropless); a run with
# drops and balancing biases resumed from its step-10 checkpoint is bit-identical to the
# straight run; a 4-process checkpoint resumes on 1 and 2 processes alike; the checkpoint holds the task embeddings, and `omnimoe eval` (greedy
# captions through the KV cache) runs on the task-routed model; --remap-tasks moves the
# task embeddings' rows; `ckpt extract` keeps a task's experts and the smaller model
# generates as the full one does.
. "$(dirname "$0")/lib.sh"

for np in 1 2 4; do
    must_train $np task-np$np --set moe.router=task
done
check close task-np1/metrics.jsonl task-np2/metrics.jsonl --rtol 1e-4
check close task-np1/metrics.jsonl task-np4/metrics.jsonl --rtol 1e-4
check routing task-np1/metrics.jsonl
# reshard: the 4-process checkpoint resumed for 4 more steps on 1 and on 2 processes
for np in 1 2; do
    mkdir -p reshard-np$np && cp task-np4/ckpt-00000020.h5 reshard-np$np/ || fail "no checkpoint"
    must_train $np reshard-np$np --set moe.router=task --set optim.steps=24 \
        --resume reshard-np$np/ckpt-00000020.h5
done
check close reshard-np1/metrics.jsonl reshard-np2/metrics.jsonl --rtol 1e-4 --from 21
[[ $(check last-step reshard-np1/metrics.jsonl) == 24 ]] || fail "reshard did not reach step 24"
"$py" - task-np2/metrics.jsonl <<'PY' || fail "a task's tokens did not all take the same experts"
import json, sys
rows = 0
for line in open(sys.argv[1]):
    obj = json.loads(line)
    if obj.get("eval"):
        continue
    for layer in obj["task_expert_load"]:
        for task, row in layer.items():
            used = [v for v in row if v]
            if not used:
                continue  # the task had no sample in this step
            assert len(used) == 2, (obj["step"], task, row)  # top_k of tiny.yaml
            assert used[0] == used[1], (obj["step"], task, row)  # each token both experts
            rows += 1
assert rows > 0, "no task rows"
print(f"{rows} task rows: each task's tokens on exactly top_k experts")
PY

# resume, with drops and the balancing bias
name=resume
set -- --set moe.router=task --set moe.capacity_factor=1.0 --set moe.bias_rate=0.01
must_train 2 $name-straight "$@"
must_train 2 $name-leg1 "$@" --set checkpoint.every=10
mkdir -p $name-leg2 && cp $name-leg1/ckpt-00000010.h5 $name-leg2/ || fail "no step-10 checkpoint"
must_train 2 $name-leg2 "$@" --resume $name-leg2/ckpt-00000010.h5
grep -q "resumed from $name-leg2/ckpt-00000010.h5 at step 10" $name-leg2.log || fail "no resume"
check same $name-straight/metrics.jsonl $name-leg1/metrics.jsonl
check same $name-straight/metrics.jsonl $name-leg2/metrics.jsonl --from 11
grep -q '| drop [1-9][0-9.]*% |\| drop 0\.[1-9]% |' $name-straight.log || fail "the resume run dropped nothing"
if command -v h5diff >/dev/null; then
    for g in /params /optim /state; do
        h5diff $name-straight/ckpt-00000020.h5 $name-leg2/ckpt-00000020.h5 $g $g ||
            fail "final checkpoints differ under $g"
    done
fi

ckpt=task-np2/ckpt-00000020.h5
out=$(h5ls -r "$ckpt") || fail "h5ls failed: $out"
grep -q "^/params/layers/00/moe/router/task .*{4, 32}" <<<"$out" || fail "no task embedding in: $out"
out=$("$bin" ckpt info "$ckpt") || fail "ckpt info failed: $out"
grep -q "^moe .*, router task$" <<<"$out" || fail "ckpt info does not name the router: $out"
"$mpiexec" -n 2 "${flags[@]}" "$bin" eval "$ckpt" "$data" --limit 2 >eval.log 2>&1 ||
    fail "eval of the task-routed model failed: $(tail -n 5 eval.log)"
grep -q "shapes" eval.log || fail "eval printed no table: $(cat eval.log)"
# --remap-tasks: the task embeddings' rows move with their tasks (zeta 1 -> 0, alpha 0 -> 1),
# the new task gets a fresh row; one step at a tiny learning rate.
h5py=/usr/bin/python3
"$h5py" "$src/tests/data/write_tasks.py" two.h5 zeta alpha:n || fail "writing two.h5"
"$h5py" "$src/tests/data/write_tasks.py" three.h5 zeta alpha:n mid:c || fail "writing three.h5"
must_train 1 two --set moe.router=task --set optim.steps=3 --set data.files=[two.h5] \
    --set 'data.tasks={alpha: 1, zeta: 1}'
must_train 1 remap --set moe.router=task --set optim.steps=4 --set data.files=[three.h5] \
    --set 'data.tasks={}' --set optim.lr=1.0e-6 --set optim.min_lr=1.0e-7 \
    --resume two/ckpt-00000003.h5 --remap-tasks
"$h5py" - two/ckpt-00000003.h5 remap/ckpt-00000004.h5 <<'PY' || fail "task embeddings did not move with their tasks"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
    for layer in ("00", "01"):
        old = a[f"params/layers/{layer}/moe/router/task"][()]
        new = b[f"params/layers/{layer}/moe/router/task"][()]
        assert old.shape[0] == 2 and new.shape[0] == 3, (old.shape, new.shape)
        near = lambda x, y: np.abs(x - y).max() < 1e-4
        for now, then in ((0, 1), (1, 0)):  # zeta, alpha
            assert near(new[now], old[then]), f"layer {layer}: row of task {now}"
            assert not near(new[now], old[now]), f"layer {layer}: row {now} did not move"
        assert not near(new[2], old[0]) and not near(new[2], old[1]), "the new task's row"
print("remap: task embedding rows moved with their tasks")
PY
# ckpt extract: the experts arith uses; the smaller model generates (greedy and sampled) and
# evaluates exactly as the full one for arith; 2 processes extract the same file.
full=task-np1/ckpt-00000020.h5
out=$("$bin" ckpt extract $full --task arith --out arith.h5) || fail "extract failed: $out"
grep -q "2 of 4 experts in each of 2 MoE layers" <<<"$out" || fail "extract said: $out"
"$mpiexec" -n 2 "${flags[@]}" "$bin" ckpt extract $full --task arith --out arith2.h5 >/dev/null ||
    fail "extract on 2 processes failed"
h5diff arith.h5 arith2.h5 /params /params || fail "1 and 2 processes extract different parameters"
"$bin" ckpt info arith.h5 --verify >info.log || fail "the extracted checkpoint does not verify"
grep -q "^moe          2 experts, top-2.*router task$" info.log || fail "ckpt info: $(grep ^moe info.log)"
grep -q "^extracted    task arith: experts of the source checkpoint per MoE layer: [0-3] [0-3] | [0-3] [0-3]$" info.log ||
    fail "ckpt info: $(grep ^extracted info.log)"
h5ls -r arith.h5 >ls.log
grep -q "^/params/layers/01/moe/experts/w1 .*{2, 32, 32}" ls.log || fail "experts: $(grep experts/w1 ls.log)"
grep -q "^/params/layers/00/moe/router/w .*{32, 2}" ls.log || fail "router: $(grep router/w ls.log)"
grep -q "^/state/extract/experts .*{2, 2}" ls.log || fail "no state/extract/experts"
[[ $(stat -c %s arith.h5) -lt $(stat -c %s $full) ]] || fail "the extracted checkpoint is not smaller"
for text in "12+34="; do
    for opts in "" "--temperature 1 --seed 1" "--temperature 1 --seed 2" "--beam 2"; do
        a=$("$bin" generate $full --task arith --text "$text" $opts --json) || fail "generate: $a"
        b=$("$bin" generate arith.h5 --task arith --text "$text" $opts --json) || fail "generate: $b"
        [[ "$a" == "$b" ]] || fail "'$text' $opts: full model $a, extracted $b"
    done
done
"$bin" eval $full "$data" --tasks arith --limit 8 --json full.json >/dev/null || fail "eval full"
"$bin" eval arith.h5 "$data" --tasks arith --limit 8 --json part.json >/dev/null || fail "eval part"
cmp full.json part.json || fail "eval differs: $(cat full.json part.json)"
# a control task: act gives the same episodes
"$bin" ckpt extract $full --task cartpole --out cartpole.h5 >/dev/null || fail "extract cartpole"
"$bin" act $full --task cartpole --env cartpole --episodes 2 --max-steps 40 --seed 3 \
    --json act-full.json >/dev/null || fail "act full"
"$bin" act cartpole.h5 --task cartpole --env cartpole --episodes 2 --max-steps 40 --seed 3 \
    --json act-part.json >/dev/null || fail "act part"
cmp act-full.json act-part.json || fail "act differs: $(cat act-full.json act-part.json)"
# refused: a model of token routing, a task it does not have
must_train 1 topk --set optim.steps=2
"$bin" ckpt extract topk/ckpt-00000002.h5 --task arith --out x.h5 >x.log 2>&1
[[ $? == 2 ]] || fail "extract of a topk model: not exit 2"
grep -q "trained with moe.router: topk" x.log || fail "extract of a topk model: $(cat x.log)"
"$bin" ckpt extract $full --task nope --out x.h5 >x.log 2>&1
[[ $? == 2 ]] || fail "extract of an unknown task: not exit 2"
grep -q "no task nope; its tasks: shapes, tones, arith, cartpole" x.log || fail "$(cat x.log)"
[[ ! -e x.h5 && ! -e x.h5.extract.d ]] || fail "a refused extract left files"
echo "ok: task routing is world-size invariant, resumes exactly and evaluates"
