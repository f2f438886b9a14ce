#!/usr/bin/env bash
# LIMoE's entropy losses (issue 14, moe.entropy): with the local and global terms on (the
# threshold above log 4, so the global term counts in every modality), 1 and 2 processes
# agree to a relative 1e-4 over 20 steps (the losses come from statistics summed over the
# ranks); the terms change the training (the losses differ from the run without them) and
# are logged (entropy_loss); a resumed run equals the straight one bit for bit; and
# entropy losses on a dense model are refused before any work (exit 2).
. "$(dirname "$0")/lib.sh"

on=(--set 'moe.entropy={local: 0.05, global: 0.05, threshold: 2.0}')
for np in 1 2; do
    must_train $np ent-np$np "${on[@]}"
done
check close ent-np1/metrics.jsonl ent-np2/metrics.jsonl --rtol 1e-4
must_train 1 off
"$py" - ent-np1/metrics.jsonl off/metrics.jsonl <<'PY' || fail "the entropy losses changed nothing"
import json, sys
def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"eval"' not in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b) == 20, (len(a), len(b))
# the logged loss is the model's cross-entropy: equal at step 1 (same model and batch),
# different once the entropy terms' gradients have moved the routers
assert a[0] == b[0], (a[0], b[0])
assert any(abs(x - y) > 1e-4 * abs(y) for x, y in zip(a[1:], b[1:])), "identical losses"
print("entropy losses change the trajectory")
PY
"$py" - ent-np1/metrics.jsonl off/metrics.jsonl <<'PY' || fail "entropy_loss is not logged as documented"
import json, sys
on = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' not in l]
off = [json.loads(l) for l in open(sys.argv[2]) if '"eval"' not in l]
assert all("entropy_loss" in o for o in on) and not any("entropy_loss" in o for o in off)
# step 1, near-uniform routers: local ~ 4 log 4 per layer, global ~ -4 log 4: they cancel
assert abs(on[0]["entropy_loss"]) < 0.05, on[0]["entropy_loss"]
print("entropy_loss logged:", [round(o["entropy_loss"], 4) for o in on[:3]], "...")
PY
grep -q '| load [0-9. ]*| entropy -\?[0-9.]* |' ent-np1.log || fail "no entropy in the log line"
# resume: no state of its own; 10 + resume + 10 equals the straight run bit for bit
must_train 1 leg1 "${on[@]}" --set checkpoint.every=10
mkdir -p leg2 && cp leg1/ckpt-00000010.h5 leg2/ || fail "no step-10 checkpoint"
must_train 1 leg2 "${on[@]}" --resume leg2/ckpt-00000010.h5
check same ent-np1/metrics.jsonl leg1/metrics.jsonl
check same ent-np1/metrics.jsonl leg2/metrics.jsonl --from 11
train 1 dense --set moe.every=0 --set 'moe.entropy={local: 0.01}'
rc=$?
[[ $rc == 2 ]] || fail "entropy on a dense model: exit $rc, expected 2"
grep -q "moe.entropy is on with moe.every = 0" dense.log || fail "no message: $(cat dense.log)"
echo "ok: entropy losses are world-size invariant and refused on a dense model"
