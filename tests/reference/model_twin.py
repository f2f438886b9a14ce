#!/usr/bin/python3
"""PyTorch twin of the omnimoe dense transformer (docs/design.md §2, docs/model.md).

Regenerate the reference file (Debian's python3-torch and python3-h5py, CPU):

    /usr/bin/python3 tests/reference/model_twin.py tests/reference/model_twin.h5

Written from the design, not from the C code. It builds a tiny model (d 16, 2 layers,
2 heads, d_ff 32, context 12, the vocabulary of 2 tasks, image and audio patches of 4
values on a 2 x 2 grid), draws its weights here, and writes to one HDF5 file:

  /params/...            the weights, float32, under the C model's tensor names
  /batch/...             a batch of 2 windows: an image-to-text sample and a cut text
                         sample packed in window 0, an audio-to-text sample then padding
                         in window 1 (attr loss_norm)
  /<mode>/logits         logits at the loss-bearing positions ([n_loss, vocab]), and
  /<mode>/logit_index    those positions, for mode = causal and prefix
  /<mode>/loss           the loss of the batch
  /<mode>/grads/...      every gradient, under the parameter names without "params/"
  /<mode>/step_losses    the losses of 10 AdamW steps on the batch (warm-up, cosine,
                         clipping by the global norm, which bites at every step)
  /<mode>/step_norms     the global gradient norms before clipping

and the same for mode = causal_bf16: model.precision bf16 (issue 19), where each of the
model's matrix products (patch embeddings, QKV, attention output, FFN, head; not the
attention scores) multiplies bf16 roundings of its inputs, forward and backward (x W is
bf16(x) bf16(W); its input gradient bf16(g) bf16(W)^T and its weight gradient
bf16(x)^T bf16(g)), the sums exact (here float64; the C code sums in float32), all else
unchanged. bf16 rounding is round-to-nearest-even to 8 significant bits, subnormals to 0.

Root attributes hold the sizes, the loss weights and the optimizer settings. The model
runs in float64 on the float32 weights. To keep the file small (shuffle + gzip):
weights are float16-representable values, the rows of the token embedding that the
batch never uses are 0 (they enter no computation), and logits and gradients are stored
as float32 rounded to 14 mantissa bits (relative rounding below 6.2e-5, far under the C
test's thresholds).
"""
import math
import sys

import h5py
import numpy as np
import torch

torch.set_default_dtype(torch.float64)

# ---- sizes and vocabulary (docs/design.md §3, tokens/tokens.h) -------------------
D, L, H, FF, T = 16, 2, 2, 32, 12
N_TASKS = 2
TEXT, BINS = 256, 1024
PAD = TEXT + BINS
EOS, SEP, TASK0 = PAD + 1, PAD + 2, PAD + 3
V = TASK0 + N_TASKS
IMG, AUD, ROWS, COLS = 4, 4, 2, 2
LOSS_WEIGHT = [1.0, 0.5]
OPT = dict(lr=1e-2, min_lr=1e-3, warmup=3, steps=10, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1, grad_clip=0.05)
N_STEPS = 10
K_TOKEN, K_IMAGE, K_AUDIO, K_PAD = 0, 1, 2, 3


# ---- bf16 products (model.precision bf16) -----------------------------------------
BF16 = False  # set while the causal_bf16 mode runs


def bf16(t):
    """Round to bfloat16 (nearest even), as float64; subnormals to signed zero."""
    f = t.detach().to(torch.float32)
    f = torch.where(f.abs() < 2.0 ** -126, torch.zeros_like(f) * f.sign(), f)
    return f.to(torch.bfloat16).to(torch.float64)


class Bf16MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ra, rb = bf16(a), bf16(b)
        ctx.save_for_backward(ra, rb)
        return ra @ rb

    @staticmethod
    def backward(ctx, g):
        ra, rb = ctx.saved_tensors
        rg = bf16(g)
        return rg @ rb.transpose(-1, -2), ra.transpose(-1, -2) @ rg


def mm(a, b):
    """A model product: a @ b, in bf16 mode on bf16 roundings of a, b (and of the gradient)."""
    return Bf16MatMul.apply(a, b) if BF16 else a @ b


# ---- the batch ---------------------------------------------------------------------
def make_batch():
    n_seq = 2
    n = n_seq * T
    b = dict(kind=np.zeros(n, np.uint8), token=np.full(n, PAD, np.int32),
             patch=np.zeros((n, max(IMG, AUD)), np.float32),
             patch_row=np.zeros(n, np.int32), patch_col=np.zeros(n, np.int32),
             pos=np.zeros(n, np.int32), segment=np.full(n, -1, np.int32),
             in_prefix=np.zeros(n, np.uint8), target=np.full(n, -1, np.int32),
             loss_mask=np.zeros(n, np.uint8), task=np.full(n, -1, np.int32))
    b["kind"][:] = K_PAD
    rng = np.random.default_rng(5)
    loss_norm = 0

    def put(s, t0, items, first_loss, seg, task):
        # items: ("tok", id) or ("img"/"aud", row, col). Loss on the targets of the
        # items from first_loss on (the prefix is everything before); cut at the end.
        nonlocal loss_norm
        for i, it in enumerate(items):
            if t0 + i >= T:
                break
            p = s * T + t0 + i
            if it[0] == "tok":
                b["kind"][p], b["token"][p] = K_TOKEN, it[1]
            else:
                b["kind"][p] = K_IMAGE if it[0] == "img" else K_AUDIO
                b["patch_row"][p], b["patch_col"][p] = it[1], it[2]
                dim = IMG if it[0] == "img" else AUD
                b["patch"][p, :dim] = rng.uniform(-1, 1, dim).astype(np.float32)
            b["pos"][p], b["segment"][p], b["task"][p] = i, seg, task
            b["in_prefix"][p] = i < first_loss
            if i + 1 < len(items) and t0 + i + 1 < T:
                nxt = items[i + 1]
                b["target"][p] = nxt[1] if nxt[0] == "tok" else -1
                if i + 1 >= first_loss:
                    b["loss_mask"][p] = 1
                    loss_norm += 1

    tok = lambda c: ("tok", c if isinstance(c, int) else ord(c))
    put(0, 0, [tok(TASK0), ("img", 0, 0), ("img", 0, 1), ("img", 1, 0), ("img", 1, 1),
               tok(SEP), tok("a"), tok("b"), tok(EOS)], 6, 0, 0)
    put(0, 9, [tok(TASK0 + 1), tok("x"), tok("y"), tok("z")], 1, 1, 1)
    put(1, 0, [tok(TASK0 + 1), ("aud", 0, 0), ("aud", 0, 1), ("aud", 1, 0), tok(SEP),
               tok("q"), tok(EOS)], 5, 0, 1)
    return b, n_seq, float(loss_norm)


# ---- the weights -------------------------------------------------------------------
def make_weights(batch):
    g = torch.Generator().manual_seed(1234)

    def rnd(shape, std, mean=0.0):
        w = torch.randn(*shape, generator=g) * std + mean
        return w.to(torch.float16).to(torch.float64)  # float16-representable values

    w = {"embed/tok": rnd((V, D), 0.5), "embed/img_w": rnd((IMG, D), 0.5),
         "embed/img_b": rnd((D,), 0.1), "embed/aud_w": rnd((AUD, D), 0.5),
         "embed/aud_b": rnd((D,), 0.1), "embed/row": rnd((ROWS, D), 0.3),
         "embed/col": rnd((COLS, D), 0.3), "embed/pos": rnd((T, D), 0.3)}
    for l in range(L):
        p = "layers/%02d/" % l
        w[p + "attn/norm"] = rnd((D,), 0.1, 1.0)
        w[p + "attn/wqkv"] = rnd((D, 3 * D), D ** -0.5)
        w[p + "attn/wo"] = rnd((D, D), D ** -0.5)
        w[p + "ffn/norm"] = rnd((D,), 0.1, 1.0)
        w[p + "ffn/w1"] = rnd((D, FF), D ** -0.5)
        w[p + "ffn/w3"] = rnd((D, FF), D ** -0.5)
        w[p + "ffn/w2"] = rnd((FF, D), FF ** -0.5)
    used = set(int(t) for t in batch["token"]) | {PAD}
    unused = torch.tensor([t not in used for t in range(V)])
    w["embed/tok"][unused] = 0.0
    w["head/norm"] = rnd((D,), 0.1, 1.0)
    w["head/w"] = rnd((D, V), D ** -0.5)
    return w


def round14(a):
    """float32 with the mantissa rounded to 14 bits (the low 9 bits zero)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + (1 << 8)) >> 9) << 9
    return u.astype(np.uint32).view(np.float32)


def decays(name):
    """AdamW weight decay on the linear maps only (docs/model.md)."""
    return name.split("/")[-1] in ("img_w", "aud_w", "wqkv", "wo", "w1", "w2", "w3") or \
        name == "head/w"


# ---- the model ---------------------------------------------------------------------
def rmsnorm(x, g):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * g


def attention_mask(b, n_seq, prefix):
    seg = torch.tensor(b["segment"]).view(n_seq, T)
    pre = torch.tensor(b["in_prefix"]).view(n_seq, T).bool()
    pad = (torch.tensor(b["kind"]).view(n_seq, T) == K_PAD) | (seg < 0)
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    same = (seg.unsqueeze(2) == seg.unsqueeze(1)) & ~pad.unsqueeze(2) & ~pad.unsqueeze(1)
    allowed = same & (j <= i)
    if prefix:
        allowed = allowed | (same & pre.unsqueeze(2) & pre.unsqueeze(1))
    return allowed | torch.eye(T, dtype=torch.bool)  # a position always sees itself


def forward(w, b, n_seq, loss_norm, prefix):
    kind = torch.tensor(b["kind"]).long()
    tokens = torch.tensor(b["token"]).long()
    tokens = torch.where(kind == K_PAD, torch.full_like(tokens, PAD), tokens)
    patch = torch.tensor(b["patch"]).double()
    is_img = (kind == K_IMAGE).double().unsqueeze(1)
    is_aud = (kind == K_AUDIO).double().unsqueeze(1)
    is_tok = 1.0 - is_img - is_aud
    place = w["embed/row"][torch.tensor(b["patch_row"]).long()] + \
        w["embed/col"][torch.tensor(b["patch_col"]).long()]
    h = is_tok * w["embed/tok"][tokens] \
        + is_img * (mm(patch[:, :IMG], w["embed/img_w"]) + w["embed/img_b"] + place) \
        + is_aud * (mm(patch[:, :AUD], w["embed/aud_w"]) + w["embed/aud_b"] + place) \
        + w["embed/pos"][torch.tensor(b["pos"]).long()]
    allowed = attention_mask(b, n_seq, prefix).unsqueeze(1)  # [n_seq, 1, T, T]
    hd = D // H
    for l in range(L):
        p = "layers/%02d/" % l
        x = rmsnorm(h, w[p + "attn/norm"])
        q, k, v = mm(x, w[p + "attn/wqkv"]).split(D, dim=-1)
        q, k, v = (t.view(n_seq, T, H, hd).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed, float("-inf"))
        y = torch.softmax(s, dim=-1) @ v  # [n_seq, H, T, hd]
        y = y.transpose(1, 2).reshape(n_seq * T, D)
        h = h + mm(y, w[p + "attn/wo"])
        x = rmsnorm(h, w[p + "ffn/norm"])
        a = torch.nn.functional.silu(mm(x, w[p + "ffn/w1"])) * mm(x, w[p + "ffn/w3"])
        h = h + mm(a, w[p + "ffn/w2"])
    logits = mm(rmsnorm(h, w["head/norm"]), w["head/w"])
    mask = torch.tensor(b["loss_mask"]).bool()
    tgt = torch.tensor(b["target"]).long()[mask]
    ce = torch.nn.functional.cross_entropy(logits[mask], tgt, reduction="none")
    lw = torch.tensor(LOSS_WEIGHT)[torch.tensor(b["task"]).long()[mask]]
    loss = (lw * ce).sum() / loss_norm
    return logits, loss


def lr_at(step):
    o = OPT
    if step < o["warmup"]:
        return o["lr"] * (step + 1) / o["warmup"]
    if step >= o["steps"]:
        return o["min_lr"]
    progress = (step - o["warmup"]) / (o["steps"] - o["warmup"])
    return o["min_lr"] + 0.5 * (o["lr"] - o["min_lr"]) * (1 + math.cos(math.pi * progress))


def run(weights, b, n_seq, loss_norm, prefix):
    w = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    logits, loss = forward(w, b, n_seq, loss_norm, prefix)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in w.items()}
    out = dict(logits=logits.detach(), loss=loss.item(), grads=grads)
    # 10 AdamW steps on the same batch, from fresh moments.
    names = list(w)
    groups = [{"params": [w[k] for k in names if decays(k)], "weight_decay": OPT["weight_decay"]},
              {"params": [w[k] for k in names if not decays(k)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]),
                            eps=OPT["eps"])
    losses, norms = [], []
    for step in range(N_STEPS):
        opt.zero_grad()
        _, loss = forward(w, b, n_seq, loss_norm, prefix)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([w[k] for k in names], OPT["grad_clip"])
        assert norm.item() > OPT["grad_clip"], "clipping must bite at every step"
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    out["step_losses"], out["step_norms"] = losses, norms
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "model_twin.h5"
    b, n_seq, loss_norm = make_batch()
    weights = make_weights(b)
    def put(group, name, data):
        # Compress only the large arrays: a chunked dataset costs a few KB of index.
        big = data.size > 512
        group.create_dataset(name, data=data, **(dict(compression="gzip", compression_opts=9,
                                                       shuffle=True) if big else {}))

    with h5py.File(path, "w", libver="latest") as f:
        for k, v in dict(d_model=D, n_layers=L, n_heads=H, d_ff=FF, context=T, vocab=V,
                         n_tasks=N_TASKS, image_patch_dim=IMG, audio_patch_dim=AUD,
                         max_rows=ROWS, max_cols=COLS, n_steps=N_STEPS).items():
            f.attrs[k] = np.int64(v)
        f.attrs["loss_weights"] = np.array(LOSS_WEIGHT)
        for k, v in OPT.items():
            f.attrs["optim_" + k] = np.float64(v)
        for k, v in weights.items():
            put(f, "params/" + k, v.numpy().astype(np.float32))
        gb = f.create_group("batch")
        gb.attrs["n_seq"], gb.attrs["context"] = np.int64(n_seq), np.int64(T)
        gb.attrs["loss_norm"] = np.float64(loss_norm)
        for k, v in b.items():
            put(gb, k, v)
        loss_pos = np.nonzero(b["loss_mask"])[0].astype(np.int32)
        global BF16
        for mode in ("causal", "prefix", "causal_bf16"):
            BF16 = mode.endswith("_bf16")
            r = run(weights, b, n_seq, loss_norm, mode == "prefix")
            g = f.create_group(mode)
            g.create_dataset("logit_index", data=loss_pos)
            put(g, "logits", round14(r["logits"].numpy()[loss_pos]))
            g.attrs["loss"] = np.float64(r["loss"])
            g.create_dataset("step_losses", data=np.array(r["step_losses"]))
            g.create_dataset("step_norms", data=np.array(r["step_norms"]))
            for k, v in r["grads"].items():
                put(g, "grads/" + k, round14(v.numpy()))
            print("%s: loss %.6f, steps %s" % (mode, r["loss"],
                  " ".join("%.4f" % x for x in r["step_losses"])))


if __name__ == "__main__":
    main()
