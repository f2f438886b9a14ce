#!/usr/bin/env bash
# omnimoe act end to end:
#  - a tiny MoE model trained here for 300 steps on the demo's cart-pole episodes balances
#    the built-in cart-pole: its mean return over 10 episodes (at most 200 steps) is at
#    least 100, where a random policy (a fair coin, as inference_act_loop measures) falls
#    after ~22 steps;
#  - the same episodes on 2 processes give the same --json;
#  - an environment program of the test's own (fault_env.py) is played through the
#    binary: a good one gives the returns it pays; every protocol fault exits 2 with a
#    message naming the episode, the step and the fault, never a hang (one on 2 processes
#    too); an unknown task and a task not of kind control exit 2 before anything starts.
. "$(dirname "$0")/../lib/common.sh"
mpiexec=${1:-mpiexec}
make_tmp
env_cmd() { echo "python3 '$src/tests/inference/fault_env.py' $1"; }
mean() { sed -nE 's/.*"mean_return": ([-0-9.e+]+).*/\1/p' "$1"; }

"$bin" data demo --out "$tmp/demo.h5" > "$tmp/data.log" 2>&1 || { cat "$tmp/data.log"; exit 1; }
# arith (a little) only so that the checkpoint has a task of another kind
"$bin" train "$src/tests/train/tiny.yaml" --set "data.files=[$tmp/demo.h5]" \
  --set "experiment.out_dir=$tmp/run" --set "data.tasks={cartpole: 1.0, arith: 0.05}" \
  --set model.d_model=64 --set model.n_heads=4 --set model.d_ff=128 --set model.context=64 \
  --set moe.every=2 --set moe.expert_ff=128 --set data.batch=16 --set optim.steps=300 \
  --set optim.warmup=30 --set log.every=100 > "$tmp/train.log" 2>&1 ||
  { tail -20 "$tmp/train.log"; exit 1; }
ckpt=$tmp/run/ckpt-00000300.h5

# trained vs random on the built-in cart-pole
"$bin" act "$ckpt" --task cartpole --env cartpole --episodes 10 --max-steps 200 \
  --json "$tmp/trained.json" > "$tmp/trained.txt" 2>&1 || { cat "$tmp/trained.txt"; count_fail "act"; }
trained=$(mean "$tmp/trained.json")
echo "cart-pole mean return over 10 episodes: trained ${trained:-?} (random ~22)"
cat "$tmp/trained.txt"
grep -q "^episode 10: return [0-9.]*, [0-9]* steps$" "$tmp/trained.txt" || count_fail "episode lines"
grep -q "^mean return [0-9.]* over 10 episodes$" "$tmp/trained.txt" || count_fail "mean line"
awk -v t="${trained:-0}" 'BEGIN { exit !(t >= 100) }' ||
  count_fail "trained mean return ${trained:-?} is not >= 100 (a random policy gets ~22)"

# the same on 2 processes (rank 0 talks to the environment, both run the model)
"$bin" act "$ckpt" --task cartpole --env cartpole --episodes 2 --max-steps 40 --seed 9 \
  --json "$tmp/np1.json" > /dev/null 2>&1 || count_fail "act, 1 process"
mpi 2 "$bin" act "$ckpt" --task cartpole --env cartpole --episodes 2 --max-steps 40 --seed 9 \
  --json "$tmp/np2.json" > "$tmp/np2.txt" 2>&1 || { cat "$tmp/np2.txt"; count_fail "act, 2 processes"; }
cmp -s "$tmp/np1.json" "$tmp/np2.json" || { diff "$tmp/np1.json" "$tmp/np2.json"; count_fail "act differs on 1 and 2 processes"; }

# a well-behaved environment program: 5 steps an episode, reward = the action (0 or 1)
"$bin" act "$ckpt" --task cartpole --env "$(env_cmd ok)" --episodes 2 --json "$tmp/ok.json" \
  > "$tmp/ok.txt" 2>&1 || { cat "$tmp/ok.txt"; count_fail "act with a child environment"; }
grep -q '"steps": 5' "$tmp/ok.json" || { cat "$tmp/ok.json"; count_fail "child environment: steps"; }

# faults: exit 2, a message naming the episode, step and fault
expect2() { # WHAT PATTERN CMD...
  local what=$1 pat=$2 out rc
  shift 2
  out=$("$@" 2>&1)
  rc=$?
  if [[ $rc -ne 2 ]] || ! grep -qF -- "$pat" <<<"$out"; then
    count_fail "$what: exit $rc (want 2), message: $(grep omnimoe: <<<"$out" | head -1) (want '$pat')"
  fi
}
act=("$bin" act "$ckpt" --task cartpole --episodes 2)
expect2 "unknown task" "has no task 'nope'" "$bin" act "$ckpt" --task nope --env cartpole
expect2 "not control" "task 'arith'" "$bin" act "$ckpt" --task arith --env cartpole
expect2 "no --env" "no --env given" "$bin" act "$ckpt" --task cartpole
expect2 "bad --episodes" "--episodes '0'" "${act[@]}" --env cartpole --episodes 0
expect2 "command that does not start" "episode 1, reset: environment '/nonexistent/env' did not start" \
  "${act[@]}" --env /nonexistent/env
expect2 "malformed line" "episode 1, step 2: environment '$(env_cmd malformed)': not JSON" \
  "${act[@]}" --env "$(env_cmd malformed)"
expect2 "obs of the wrong length" \
  "episode 1, step 2: environment '$(env_cmd short_obs)': \"obs\" has 3 values, the task has 4" \
  "${act[@]}" --env "$(env_cmd short_obs)"
expect2 "exits mid-episode" "episode 1, step 2: environment '$(env_cmd exit_mid)' exited with status 4" \
  "${act[@]}" --env "$(env_cmd exit_mid)"
expect2 "stops answering" "episode 1, step 2: environment '$(env_cmd hang)' did not answer within 10 s" \
  "${act[@]}" --env "$(env_cmd hang)" --env-timeout 10
expect2 "exits mid-episode, 2 processes" "exited with status 4" \
  mpi 2 "${act[@]}" --env "$(env_cmd exit_mid)"
echo "act: $fails failed"
[[ $fails -eq 0 ]]
