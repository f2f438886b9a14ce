#!/usr/bin/python3
"""PyTorch twin of the omnimoe MoE layer (docs/design.md §2, "MoE layer" and
"Auxiliary losses"), written from the design, not from the C code.

Regenerate the reference file (Debian's python3-torch and python3-h5py):
    /usr/bin/python3 tests/reference/moe_twin.py tests/reference/moe_twin.h5

For each case it builds a standalone MoE layer on n tokens of one worker:
  router logits = x W_r (W_r [d, E]), p = softmax(logits), top-k experts per token, gates =
  the selected probabilities (renormalised over the k when normalize_topk); capacity
  C = ceil(k * capacity_factor * n / E) per expert (capacity_factor <= 0: dropless); an
  over-full expert keeps first choices before second choices, within a choice by router
  probability descending, ties by token index; y = sum over kept choices g * SwiGLU_e(x)
  with SwiGLU(x) = W2 (silu(W1 x) * (W3 x)), W1, W3 [E, d, ff], W2 [E, ff, d]; plus shared
  experts (always on) of the same form.
  aux = E * sum_i f_i P_i, f_i = (assignments to i, k per token, counted before drops) / (k n),
  P_i = mean router probability of i; z = mean_t logsumexp(logits_t)^2.
  loss = sum(y * R) + aux_coef * aux + z_coef * z, f_i held constant (not differentiable).
It writes inputs, weights, outputs, both losses, the total, and the gradients of the total
with respect to x and every weight, computed in float64 from float32 inputs.
"""
import math
import sys

import h5py
import numpy as np
import torch

torch.set_default_dtype(torch.float64)

CASES = [
    # name,           k, capacity_factor, normalize, shared experts
    ("top1_drop", 1, 1.0, False, 0),
    ("top2_drop", 2, 1.0, True, 0),
    ("top2_dropless", 2, 0.0, True, 1),
    ("top1_dropless_shared", 1, 0.0, False, 2),
]
N, D, E, FF = 16, 8, 4, 8
AUX, ZL = 0.1, 0.01


def f32(a):
    """Round to float32 (what the C code holds) and return float64 for the computation."""
    return torch.tensor(np.asarray(a, dtype=np.float32).astype(np.float64), requires_grad=True)


def swiglu(x, w1, w3, w2):
    return (torch.nn.functional.silu(x @ w1) * (x @ w3)) @ w2


def keep_mask(experts, probs_sel, k, capacity):
    """Which (token, choice) assignments survive the capacity limit."""
    keep = np.ones((N, k), dtype=bool)
    for e in range(E):
        cand = [(c, -probs_sel[t, c], t) for t in range(N) for c in range(k) if experts[t, c] == e]
        cand.sort()
        gaps = [abs(a[1] - b[1]) for a, b in zip(cand, cand[1:]) if a[0] == b[0]]
        assert not gaps or min(gaps) > 1e-5, "priority tie: change the seed"
        for c, _, t in cand[capacity:]:
            keep[t, c] = False
    return keep


def run(rng, name, k, cf, normalize, shared):
    x = f32(rng.normal(0, 1, (N, D)))
    R = torch.tensor(rng.normal(0, 1, (N, D)).astype(np.float32).astype(np.float64))
    wr = f32(rng.normal(0, 0.5, (D, E)))
    w1 = f32(rng.normal(0, 0.3, (E, D, FF)))
    w3 = f32(rng.normal(0, 0.3, (E, D, FF)))
    w2 = f32(rng.normal(0, 0.3, (E, FF, D)))
    S = max(shared, 1)
    sw1 = f32(rng.normal(0, 0.3, (S, D, FF))[:shared])
    sw3 = f32(rng.normal(0, 0.3, (S, D, FF))[:shared])
    sw2 = f32(rng.normal(0, 0.3, (S, FF, D))[:shared])

    logits = x @ wr
    probs = torch.softmax(logits, dim=1)
    lse = torch.logsumexp(logits, dim=1)
    top = torch.topk(logits.detach(), k, dim=1)
    experts = top.indices.numpy()
    # decisions must not sit on a knife's edge between float32 and float64
    srt = np.sort(logits.detach().numpy(), axis=1)[:, ::-1]
    assert np.min(srt[:, k - 1] - srt[:, k]) > 1e-3, "top-k margin too small: change the seed"
    sel = torch.gather(probs, 1, top.indices)
    gates = sel / sel.sum(dim=1, keepdim=True) if normalize else sel
    capacity = math.ceil(k * cf * N / E) if cf > 0 else N
    keep = keep_mask(experts, sel.detach().numpy(), k, capacity)

    y = torch.zeros(N, D)
    for t in range(N):
        for c in range(k):
            if keep[t, c]:
                e = experts[t, c]
                y[t] = y[t] + gates[t, c] * swiglu(x[t:t + 1], w1[e], w3[e], w2[e])[0]
    for s in range(shared):
        y = y + swiglu(x, sw1[s], sw3[s], sw2[s])

    counts = np.bincount(experts.reshape(-1), minlength=E).astype(np.float64)
    f = torch.tensor(counts / (k * N))
    P = probs.mean(dim=0)
    aux = E * (f * P).sum()
    z = (lse ** 2).mean()
    loss = (y * R).sum() + AUX * aux + ZL * z
    loss.backward()

    out = {"x": x, "R": R, "router_w": wr, "experts_w1": w1, "experts_w3": w3,
           "experts_w2": w2, "shared_w1": sw1, "shared_w3": sw3, "shared_w2": sw2}
    res = {k2: v.detach().numpy().astype(np.float32) for k2, v in out.items()}
    for k2, v in out.items():
        if v.requires_grad:
            grad = v.grad if v.grad is not None else torch.zeros_like(v)
            res["d_" + k2] = grad.numpy()
    res["out"] = y.detach().numpy()
    res["experts"] = experts.astype(np.int32)
    res["keep"] = keep.astype(np.int32)
    attrs = {"top_k": k, "capacity_factor": cf, "normalize_topk": int(normalize),
             "shared_experts": shared, "num_experts": E, "d_model": D, "expert_ff": FF,
             "tokens": N, "aux_loss": AUX, "z_loss": ZL, "aux": aux.item(), "z": z.item(),
             "loss": loss.item(), "dropped": int((~keep).sum())}
    return res, attrs


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "moe_twin.h5"
    rng = np.random.default_rng(20261129)
    with h5py.File(path, "w") as h:
        for name, k, cf, normalize, shared in CASES:
            res, attrs = run(rng, name, k, cf, normalize, shared)
            g = h.create_group(name)
            for key, v in res.items():
                g.create_dataset(key, data=v)
            for key, v in attrs.items():
                g.attrs[key] = v
            print(f"{name}: loss {attrs['loss']:.6f} aux {attrs['aux']:.6f} "
                  f"z {attrs['z']:.6f} dropped {attrs['dropped']}")


if __name__ == "__main__":
    main()
