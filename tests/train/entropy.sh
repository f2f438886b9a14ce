#!/usr/bin/env bash
# LIMoE's entropy losses (issue 14, moe.entropy): with the local and global terms on (the
# threshold above log 4, so the global term counts in every modality), 1 and 2 processes
# agree to a relative 1e-4 over 20 steps (the losses come from statistics summed over the
# ranks); the terms change the training (the losses differ from the run without them); and
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
# step 1: the same model and batch; the entropy terms add about 0.05 * (4 log 4 - 4 log 4)
# per layer, so compare later steps, where the gradients have differed
assert any(abs(x - y) > 1e-4 * abs(y) for x, y in zip(a[1:], b[1:])), "identical losses"
print("entropy losses change the trajectory")
PY
train 1 dense --set moe.every=0 --set 'moe.entropy={local: 0.01}'
rc=$?
[[ $rc == 2 ]] || fail "entropy on a dense model: exit $rc, expected 2"
grep -q "moe.entropy is on with moe.every = 0" dense.log || fail "no message: $(cat dense.log)"
echo "ok: entropy losses are world-size invariant and refused on a dense model"
