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
Two more cases (issue 14, docs/moe.md):
  task routing (moe.router: task): the router sees the task embedding Emb [T, d] instead of
  x: task logits = Emb W_r, every token takes its task's row; aux and z count each task
  present in the batch once: f_i = (present tasks choosing i) / (k T_p), P_i = mean over
  present tasks of p_task, z = mean over present tasks of lse^2.
  entropy losses (moe.entropy) per modality m of the tokens: local_m = mean over its tokens of
  H(p_t); global_m = -H(mean over its tokens of p_t), counted only where H < threshold;
  loss += local_coef * sum_m local_m + global_coef * sum_m global_m.
  expert choice (moe.router: expert_choice, in training): each expert takes the
  C = ceil(capacity_factor * k * n / E) tokens with the highest p_t,e (ties: lower token);
  y_t = sum over the experts that took t of p_t,e * SwiGLU_e(x_t), no renormalisation, a
  token taken by none gets only the shared experts; decisions are written E wide
  (experts[t, e] = e, keep[t, e] = taken); aux counts the choices (its coefficient is 0: the
  config refuses the Switch loss with expert choice), z as for tokens.
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
    # name,           k, capacity_factor, normalize, shared experts, router, entropy
    ("top1_drop", 1, 1.0, False, 0, "topk", False),
    ("top2_drop", 2, 1.0, True, 0, "topk", False),
    ("top2_dropless", 2, 0.0, True, 1, "topk", False),
    ("top1_dropless_shared", 1, 0.0, False, 2, "topk", False),
    ("task_top2_drop", 2, 1.0, True, 0, "task", False),
    ("entropy_top2_drop", 2, 1.0, True, 0, "topk", True),
    ("expert_choice_k2", 2, 0.5, True, 1, "expert_choice", False),
]
TASKS = 3  # task routing: token t is of task TASK_OF[t]; task 2 is absent from the batch
TASK_OF = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0]
MODS = 4  # entropy: text, image, audio, control; token t of modality t % 4
ENT_LOCAL, ENT_GLOBAL = 0.3, 0.2
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
        # equal probabilities are exact ties (tokens of one task): broken by token index
        gaps = [abs(a[1] - b[1]) for a, b in zip(cand, cand[1:]) if a[0] == b[0] and a[1] != b[1]]
        assert not gaps or min(gaps) > 1e-5, "priority tie: change the seed"
        for c, _, t in cand[capacity:]:
            keep[t, c] = False
    return keep


def run(rng, name, k, cf, normalize, shared, router, entropy):
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

    task_emb = f32(rng.normal(0, 1, (TASKS, D)) if router == "task" else np.zeros((0, D)))
    task = np.array(TASK_OF if router == "task" else [-1] * N, dtype=np.int32)
    if router == "task":
        task_logits = task_emb @ wr
        logits = task_logits[torch.tensor(task, dtype=torch.long)]
    else:
        logits = x @ wr
    probs = torch.softmax(logits, dim=1)
    lse = torch.logsumexp(logits, dim=1)
    if router == "expert_choice":
        return run_expert_choice(x, R, wr, w1, w3, w2, sw1, sw3, sw2, task_emb, task, probs,
                                 lse, k, cf, normalize, shared)
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

    if router == "task":
        present = sorted(set(task.tolist()))
        task_top = torch.topk(task_logits.detach(), k, dim=1).indices.numpy()[present]
        counts = np.bincount(task_top.reshape(-1), minlength=E).astype(np.float64)
        f = torch.tensor(counts / (k * len(present)))
        tp = torch.softmax(task_logits, dim=1)[present]
        P = tp.mean(dim=0)
        z = (torch.logsumexp(task_logits, dim=1)[present] ** 2).mean()
    else:
        counts = np.bincount(experts.reshape(-1), minlength=E).astype(np.float64)
        f = torch.tensor(counts / (k * N))
        P = probs.mean(dim=0)
        z = (lse ** 2).mean()
    aux = E * (f * P).sum()
    loss = (y * R).sum() + AUX * aux + ZL * z
    mod = np.array([t % MODS for t in range(N)] if entropy else [-1] * N, dtype=np.int32)
    ent_local = ent_global = torch.tensor(0.0)
    threshold = 0.0
    if entropy:
        h_tok = -(probs * torch.log(probs)).sum(dim=1)
        means = [probs[torch.tensor(mod == m)].mean(dim=0) for m in range(MODS)]
        h_mean = [-(pm * torch.log(pm)).sum() for pm in means]
        hs = sorted(h.item() for h in h_mean)
        threshold = (hs[1] + hs[2]) / 2  # two modalities below, two above
        assert hs[2] - hs[1] > 1e-3, "entropy threshold margin too small: change the seed"
        ent_local = sum(h_tok[torch.tensor(mod == m)].mean() for m in range(MODS))
        ent_global = sum(-h for h in h_mean if h.item() < threshold)
        loss = loss + ENT_LOCAL * ent_local + ENT_GLOBAL * ent_global
    loss.backward()

    out = {"x": x, "R": R, "router_w": wr, "experts_w1": w1, "experts_w3": w3,
           "experts_w2": w2, "shared_w1": sw1, "shared_w3": sw3, "shared_w2": sw2,
           "task_emb": task_emb}
    res = {k2: v.detach().numpy().astype(np.float32) for k2, v in out.items()}
    for k2, v in out.items():
        if v.requires_grad:
            grad = v.grad if v.grad is not None else torch.zeros_like(v)
            res["d_" + k2] = grad.numpy()
    res["out"] = y.detach().numpy()
    res["experts"] = experts.astype(np.int32)
    res["keep"] = keep.astype(np.int32)
    res["task"] = task
    res["modality"] = mod
    attrs = {"top_k": k, "capacity_factor": cf, "normalize_topk": int(normalize),
             "shared_experts": shared, "num_experts": E, "d_model": D, "expert_ff": FF,
             "tokens": N, "aux_loss": AUX, "z_loss": ZL, "aux": aux.item(), "z": z.item(),
             "loss": loss.item(), "dropped": int((~keep).sum()),
             "router": int(router == "task"), "n_tasks": TASKS if router == "task" else 0,
             "entropy_local": ENT_LOCAL if entropy else 0.0,
             "entropy_global": ENT_GLOBAL if entropy else 0.0,
             "entropy_threshold": threshold, "ent_local": ent_local.item(),
             "ent_global": ent_global.item()}
    return res, attrs


def run_expert_choice(x, R, wr, w1, w3, w2, sw1, sw3, sw2, task_emb, task, probs, lse, k, cf,
                      normalize, shared):
    capacity = min(N, max(1, math.ceil(cf * k * N / E)))
    p = probs.detach().numpy()
    keep = np.zeros((N, E), dtype=bool)
    for e in range(E):
        order = sorted(range(N), key=lambda t: (-p[t, e], t))
        s = [p[t, e] for t in order]
        assert s[capacity - 1] - s[capacity] > 1e-5, "choice margin too small: change the seed"
        for t in order[:capacity]:
            keep[t, e] = True
    y = torch.zeros(N, D)
    for t in range(N):
        for e in range(E):
            if keep[t, e]:
                y[t] = y[t] + probs[t, e] * swiglu(x[t:t + 1], w1[e], w3[e], w2[e])[0]
    for s2 in range(shared):
        y = y + swiglu(x, sw1[s2], sw3[s2], sw2[s2])
    f = torch.tensor(keep.sum(axis=0).astype(np.float64) / (k * N))
    aux = E * (f * probs.mean(dim=0)).sum()
    z = (lse ** 2).mean()
    loss = (y * R).sum() + ZL * z  # aux_loss 0 with expert choice
    loss.backward()
    out = {"x": x, "R": R, "router_w": wr, "experts_w1": w1, "experts_w3": w3,
           "experts_w2": w2, "shared_w1": sw1, "shared_w3": sw3, "shared_w2": sw2,
           "task_emb": task_emb}
    res = {k2: v.detach().numpy().astype(np.float32) for k2, v in out.items()}
    for k2, v in out.items():
        if v.requires_grad:
            grad = v.grad if v.grad is not None else torch.zeros_like(v)
            res["d_" + k2] = grad.numpy()
    res["out"] = y.detach().numpy()
    res["experts"] = np.tile(np.arange(E, dtype=np.int32), (N, 1))
    res["keep"] = keep.astype(np.int32)
    res["task"] = task
    res["modality"] = np.array([-1] * N, dtype=np.int32)
    unrouted = int((~keep.any(axis=1)).sum())
    assert unrouted > 0, "no token left out: change the capacity"
    attrs = {"top_k": k, "capacity_factor": cf, "normalize_topk": int(normalize),
             "shared_experts": shared, "num_experts": E, "d_model": D, "expert_ff": FF,
             "tokens": N, "aux_loss": 0.0, "z_loss": ZL, "aux": aux.item(), "z": z.item(),
             "loss": loss.item(), "dropped": unrouted, "router": 2, "n_tasks": 0,
             "entropy_local": 0.0, "entropy_global": 0.0, "entropy_threshold": 0.0,
             "ent_local": 0.0, "ent_global": 0.0}
    return res, attrs


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "moe_twin.h5"
    rng = np.random.default_rng(20261129)
    with h5py.File(path, "w") as h:
        for name, k, cf, normalize, shared, router, entropy in CASES:
            res, attrs = run(rng, name, k, cf, normalize, shared, router, entropy)
            g = h.create_group(name)
            for key, v in res.items():
                g.create_dataset(key, data=v)
            for key, v in attrs.items():
                g.attrs[key] = v
            print(f"{name}: loss {attrs['loss']:.6f} aux {attrs['aux']:.6f} "
                  f"z {attrs['z']:.6f} dropped {attrs['dropped']}")


if __name__ == "__main__":
    main()
