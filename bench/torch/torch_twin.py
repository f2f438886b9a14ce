#!/usr/bin/python3
"""PyTorch speed twin of omnimoe's training step (issue 18), for bench/torch/vs_torch.sh.

    /usr/bin/python3 bench/torch/torch_twin.py EXP.yaml [--threads N] [--steps S]
                     [--warmup W] [--set key=value]...

The same model as the C code and the test twin (tests/reference/model_twin.py, whose
RMSNorm this imports): token and position embeddings, pre-norm blocks with fused-QKV
attention (causal, never across packed samples), SwiGLU FFNs, and in every moe.every-th
block an MoE layer (router softmax, top-k, gates renormalised over the k when
moe.normalize_topk, capacity per expert by router priority, or dropless with
capacity_factor <= 0; Switch load-balance loss and router z-loss); untied head, cross-
entropy; AdamW with decay on matrices, clipping by the global norm. In float32 on the CPU,
written the way a PyTorch user would write it for speed (batched matrix products,
experts over the tokens gathered per expert, torch.optim.AdamW with foreach).

A batch is data.batch windows of model.context random text tokens, two samples packed
per window (as bench_model's batches). One process: the whole global batch. It prints the
best and mean step time and a RESULT line with tokens/s (batch x context / best step).
"""
import argparse
import math
import os
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "reference"))
from model_twin import rmsnorm  # noqa: E402  the test twin's RMSNorm (x / rms * g)

VOCAB = 256 + 1024 + 3 + 4  # text bytes, value bins, <pad> <eos> <sep>, 4 task tokens


def setting(cfg, key, default):
    part, name = key.split(".")
    return cfg.get(part, {}).get(name, default)


def parse_value(text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


class Twin(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        g = lambda k, d: setting(cfg, k, d)  # noqa: E731
        self.d = d = g("model.d_model", 256)
        self.L = g("model.n_layers", 4)
        self.H = g("model.n_heads", 4)
        self.T = g("model.context", 256)
        ff = g("model.d_ff", 1024)
        self.E = g("moe.num_experts", 8)
        self.k = g("moe.top_k", 2)
        self.every = g("moe.every", 2)
        eff = g("moe.expert_ff", ff)
        self.cf = g("moe.capacity_factor", 1.25)
        self.norm_topk = g("moe.normalize_topk", True)
        self.aux = g("moe.aux_loss", 0.01)
        self.zl = g("moe.z_loss", 0.001)
        rnd = lambda *s, std=0.02: torch.nn.Parameter(torch.randn(*s) * std)  # noqa: E731
        self.tok = rnd(VOCAB, d)
        self.pos = rnd(self.T, d)
        res = 0.02 / math.sqrt(2 * self.L)
        self.blocks = torch.nn.ModuleList()
        for layer in range(self.L):
            b = torch.nn.Module()
            b.attn_norm = torch.nn.Parameter(torch.ones(d))
            b.wqkv = rnd(d, 3 * d)
            b.wo = rnd(d, d, std=res)
            b.ffn_norm = torch.nn.Parameter(torch.ones(d))
            b.moe = self.every > 0 and (layer + 1) % self.every == 0
            if b.moe:
                b.router = rnd(d, self.E)
                b.w1 = rnd(self.E, d, eff)
                b.w3 = rnd(self.E, d, eff)
                b.w2 = rnd(self.E, eff, d, std=res)
            else:
                b.w1 = rnd(d, ff)
                b.w3 = rnd(d, ff)
                b.w2 = rnd(ff, d, std=res)
            self.blocks.append(b)
        self.out_norm = torch.nn.Parameter(torch.ones(d))
        self.out_w = rnd(d, VOCAB)

    def moe(self, b, x):
        n = x.shape[0]
        logits = x @ b.router
        probs = torch.softmax(logits, dim=-1)
        sel, experts = torch.topk(probs, self.k, dim=-1)
        gates = sel / sel.sum(-1, keepdim=True) if self.norm_topk else sel
        flat_e = experts.reshape(-1)
        flat_g = gates.reshape(-1)
        flat_t = torch.arange(n).repeat_interleave(self.k)
        flat_p = sel.detach().reshape(-1)
        cap = math.ceil(self.k * self.cf * n / self.E) if self.cf > 0 else n * self.k
        y = torch.zeros_like(x)
        for e in range(self.E):
            idx = (flat_e == e).nonzero().squeeze(1)
            if idx.numel() > cap:  # keep the highest router probabilities
                idx = idx[torch.topk(flat_p[idx], cap).indices]
            if idx.numel() == 0:
                continue
            t = flat_t[idx]
            xe = x.index_select(0, t)
            he = torch.nn.functional.silu(xe @ b.w1[e]) * (xe @ b.w3[e])
            y = y.index_add(0, t, (he @ b.w2[e]) * flat_g[idx].unsqueeze(1))
        f = torch.bincount(flat_e, minlength=self.E).float() / (self.k * n)
        aux = self.E * (f * probs.mean(0)).sum()
        z = (torch.logsumexp(logits, dim=-1) ** 2).mean()
        return y, self.aux * aux + self.zl * z

    def forward(self, tokens, pos, allowed, target, loss_mask):
        S, T, d, H = tokens.shape[0], self.T, self.d, self.H
        hd = d // H
        h = (self.tok[tokens] + self.pos[pos]).view(S * T, d)
        extra = 0.0
        for b in self.blocks:
            x = rmsnorm(h, b.attn_norm)
            q, k, v = (x @ b.wqkv).split(d, dim=-1)
            q, k, v = (t.view(S, T, H, hd).transpose(1, 2) for t in (q, k, v))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(~allowed, float("-inf"))
            y = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(S * T, d)
            h = h + y @ b.wo
            x = rmsnorm(h, b.ffn_norm)
            if b.moe:
                y, a = self.moe(b, x)
                h = h + y
                extra = extra + a
            else:
                h = h + (torch.nn.functional.silu(x @ b.w1) * (x @ b.w3)) @ b.w2
        logits = rmsnorm(h, self.out_norm) @ self.out_w
        m = loss_mask.view(-1)
        ce = torch.nn.functional.cross_entropy(logits[m], target.view(-1)[m])
        return ce + extra


def make_batch(S, T, gen):
    """S windows of T random text tokens, two samples packed per window."""
    tokens = torch.randint(0, 256, (S, T), generator=gen)
    t = torch.arange(T)
    half = T // 2
    seg = (t >= half).long()
    pos = torch.where(t < half, t, t - half).expand(S, T).contiguous()
    target = torch.roll(tokens, -1, dims=1)
    loss_mask = ((t + 1) % half != 0).expand(S, T).contiguous()
    i, j = t.view(T, 1), t.view(1, T)
    allowed = (seg.view(T, 1) == seg.view(1, T)) & (j <= i)
    return tokens, pos, allowed.view(1, 1, T, T), target, loss_mask


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    with open(a.config) as f:
        cfg = yaml.safe_load(f)
    for kv in a.set:
        key, _, val = kv.partition("=")
        part, name = key.split(".")
        cfg.setdefault(part, {})[name] = parse_value(val)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Twin(cfg)
    S, T = setting(cfg, "data.batch", 8), model.T
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in ("tok", "pos")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in ("tok", "pos"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": setting(cfg, "optim.weight_decay", 0.1)},
                             {"params": other, "weight_decay": 0.0}],
                            lr=setting(cfg, "optim.lr", 3e-4), betas=(0.9, 0.95), eps=1e-8,
                            foreach=True)
    clip = setting(cfg, "optim.grad_clip", 1.0)
    gen = torch.Generator().manual_seed(2)
    times = []
    for step in range(a.warmup + a.steps):
        batch = make_batch(S, T, gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(*batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
    best, mean = min(times), sum(times) / len(times)
    print("torch %s: %d threads, step best %.4f s mean %.4f s, %.0f tokens/s, loss %.3f"
          % (torch.__version__, a.threads, best, mean, S * T / best, loss.item()))
    print("RESULT torch threads=%d step_best=%.4f step_mean=%.4f tokens_per_s=%.1f"
          % (a.threads, best, mean, S * T / best))


if __name__ == "__main__":
    main()
