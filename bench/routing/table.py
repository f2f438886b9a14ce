#!/usr/bin/env python3
"""The table and figures of the routing study (bench/routing/study.sh, docs/routing.md).

    table.py OUT_DIR ROW...

Reads OUT_DIR/ROW-sSEED/metrics.jsonl for every row and seed found, prints markdown tables
(means over seeds; the spread is max - min over seeds) and writes one task x expert SVG
heatmap per row (seed 1, or the lowest seed present) to OUT_DIR/fig-ROW.svg: the share of
each task's kept assignments that each expert took, summed over the last quarter of training,
one panel per MoE layer.
"""
import glob
import json
import math
import os
import re
import sys


def load(path):
    train, ev = [], None
    for line in open(path):
        o = json.loads(line)
        if o.get("eval"):
            ev = o
        else:
            train.append(o)
    # a resumed run logs some steps twice: the later object of a step counts
    by_step = {}
    for o in train:
        by_step[o["step"]] = o
    return [by_step[s] for s in sorted(by_step)], ev


def mean(v):
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None


def fmt(v, spread=None, digits=3):
    if v is None:
        return "–"
    s = f"{v:.{digits}f}"
    if spread is not None and spread > 0:
        s += f" ±{spread / 2:.{digits}f}"
    return s


def run_summary(d):
    train, ev = load(os.path.join(d, "metrics.jsonl"))
    if not train or ev is None:
        return None
    r = {"tasks": list(ev["task_loss"].keys())}
    r["val_loss"] = ev["task_loss"]
    r["exact"] = ev.get("task_exact_match", {})
    r["ret"] = ev.get("task_return", {})
    r["acc"] = ev.get("task_accuracy", {})
    tps = [o["tokens_per_s"] for o in train[1:] if o.get("tokens_per_s")]
    r["tok_s"] = mean(tps)
    # wall time of the training steps (elapsed at the last step)
    r["elapsed"] = train[-1].get("elapsed_s")
    moe = "task_expert_load" in train[-1]
    r["moe"] = moe
    if not moe:
        return r
    drops = [o["drop_share"] for o in train if o.get("drop_share") is not None]
    r["drop"] = mean(drops)
    # per task: drops over (kept + dropped), summed over layers and the whole run
    kept, dropped = {}, {}
    for o in train:
        for layer_load, layer_drop in zip(o["task_expert_load"], o["task_expert_drop"]):
            for t, v in layer_load.items():
                kept[t] = kept.get(t, 0.0) + sum(v)
            for t, v in layer_drop.items():
                dropped[t] = dropped.get(t, 0.0) + sum(v)
    r["task_drop"] = {t: dropped.get(t, 0.0) / (kept[t] + dropped.get(t, 0.0))
                      if kept[t] + dropped.get(t, 0.0) > 0 else 0.0 for t in kept}
    last = train[-1]
    ent = {}
    for m in ("text", "image", "audio", "control"):
        vals = [layer.get(m) for layer in last["modality_entropy"]]
        ent[m] = mean(vals)
    r["entropy"] = ent
    r["mean_entropy"] = {m: mean([layer.get(m) for layer in last["modality_mean_entropy"]])
                         for m in ("text", "image", "audio", "control")}
    r["dead"] = sum(len(layer) for layer in last["dead_experts"])
    # task x expert shares over the last quarter of training
    q = train[len(train) * 3 // 4:]
    n_layers = len(last["task_expert_load"])
    heat = []
    for li in range(n_layers):
        acc = {}
        for o in q:
            for t, v in o["task_expert_load"][li].items():
                a = acc.setdefault(t, [0.0] * len(v))
                for e, x in enumerate(v):
                    a[e] += x
        heat.append({t: [x / sum(v) if sum(v) > 0 else 0.0 for x in v] for t, v in acc.items()})
    r["heat"] = heat
    return r


def svg_heatmap(name, heat, tasks, path):
    cell, left, top, gap = 34, 78, 34, 24
    E = len(next(iter(heat[0].values())))
    w = max(left + len(heat) * (E * cell + gap) + 10, 600)
    h = top + len(tasks) * cell + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="4" y="14" font-size="13" font-weight="bold">{name}: share of each '
           f'task\'s assignments per expert</text>']
    for li, layer in enumerate(heat):
        x0 = left + li * (E * cell + gap)
        out.append(f'<text x="{x0}" y="{top - 4}">MoE layer {li}</text>')
        for ti, t in enumerate(tasks):
            y = top + ti * cell
            if li == 0:
                out.append(f'<text x="4" y="{y + cell / 2 + 4}">{t}</text>')
            row = layer.get(t, [0.0] * E)
            for e, v in enumerate(row):
                shade = int(255 - 215 * min(1.0, v / 0.6))
                out.append(f'<rect x="{x0 + e * cell}" y="{y}" width="{cell - 1}" '
                           f'height="{cell - 1}" fill="rgb({shade},{shade},255)"/>')
                colour = "white" if v > 0.35 else "black"
                out.append(f'<text x="{x0 + e * cell + 4}" y="{y + cell / 2 + 4}" '
                           f'fill="{colour}">{v * 100:.0f}</text>')
        for e in range(E):
            out.append(f'<text x="{x0 + e * cell + cell / 2 - 4}" '
                       f'y="{top + len(tasks) * cell + 14}">{e}</text>')
    out.append(f'<text x="{left}" y="{h - 2}">expert (columns), % of the task\'s kept '
               f'assignments, last quarter of training, seed 1</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    out, rows = sys.argv[1], sys.argv[2:]
    res = {}
    for row in rows:
        for d in sorted(glob.glob(os.path.join(out, f"{row}-s*"))):
            m = re.fullmatch(re.escape(row) + r"-s(\d+)", os.path.basename(d))
            if not m or not os.path.isfile(os.path.join(d, "done")):
                continue
            s = run_summary(d)
            if s:
                res.setdefault(row, {})[int(m.group(1))] = s
    if not res:
        print("no finished runs")
        return
    any_run = next(iter(next(iter(res.values())).values()))
    tasks = any_run["tasks"]
    text_tasks = [t for t in tasks if t in any_run["exact"]]
    ctl = [t for t in tasks if t in any_run["ret"]]

    def over(row, f):
        v = [f(s) for s in res[row].values()]
        v = [x for x in v if x is not None]
        if not v:
            return None, None
        return sum(v) / len(v), max(v) - min(v)

    print(f"Validation loss per task (mean over seeds ± half the spread), the mean over tasks, "
          f"and its rank in each seed")
    print()
    seeds = sorted({s for r in res.values() for s in r})
    hdr = ["router", "seeds"] + tasks + ["mean", "rank per seed"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    meanloss = {row: {s: sum(r["val_loss"][t] for t in tasks) / len(tasks)
                      for s, r in res[row].items()} for row in res}
    ranks = {}
    for s in seeds:
        order = sorted([row for row in res if s in meanloss[row]], key=lambda r: meanloss[r][s])
        for i, row in enumerate(order):
            ranks.setdefault(row, {})[s] = i + 1
    for row in res:
        cells = [row, str(len(res[row]))]
        for t in tasks:
            cells.append(fmt(*over(row, lambda s: s["val_loss"][t])))
        cells.append(fmt(*over(row, lambda s: sum(s["val_loss"][t] for t in tasks) / len(tasks))))
        cells.append(" ".join(str(ranks[row].get(s, "–")) for s in seeds))
        print("| " + " | ".join(cells) + " |")
    print()
    speed = {}
    for row in res:
        f = os.path.join(out, f"speed-{row}.txt")
        if os.path.isfile(f):
            speed[row] = float(open(f).read().split()[0])
    print("Exact match (greedy captions of 64 validation samples per task), cart-pole return "
          "(5 episodes, at most 200 steps), training tokens per CPU-second (one process, one "
          "BLAS thread; speed-ROW.txt) and relative to dense")
    print()
    hdr = ["router"] + [f"{t} exact" for t in text_tasks] + [f"{t} return" for t in ctl] + \
        ["tokens/CPU-s", "vs dense"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in res:
        cells = [row]
        for t in text_tasks:
            cells.append(fmt(*over(row, lambda s: s["exact"].get(t)), digits=2))
        for t in ctl:
            cells.append(fmt(*over(row, lambda s: s["ret"].get(t)), digits=0))
        cells.append(fmt(speed.get(row), digits=0))
        cells.append(f"{speed[row] / speed['dense']:.2f}" if row in speed and "dense" in speed
                     else "–")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Routing: drop share (all assignments; per task, the largest), mean token routing "
          "entropy per modality at the end (nats, mean over MoE layers; ln E is uniform), "
          "dead experts at the end (over all MoE layers), seed means")
    print()
    hdr = ["router", "drop", "worst task drop", "H text", "H image", "H audio", "H control",
           "dead"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in res:
        if not any_moe(res[row]):
            print(f"| {row} | – | – | – | – | – | – | – |")
            continue
        cells = [row, fmt(100 * over(row, lambda s: s["drop"])[0], digits=2) + "%"]
        worst = {}
        for s in res[row].values():
            for t, v in s["task_drop"].items():
                worst[t] = worst.get(t, 0.0) + v / len(res[row])
        wt = max(worst, key=worst.get)
        cells.append(f"{100 * worst[wt]:.2f}% ({wt})")
        for m in ("text", "image", "audio", "control"):
            cells.append(fmt(over(row, lambda s: s["entropy"][m])[0], digits=2))
        cells.append(fmt(over(row, lambda s: s["dead"])[0], digits=1))
        print("| " + " | ".join(cells) + " |")
    for row in res:
        s = res[row][min(res[row])]
        if s["moe"]:
            svg_heatmap(row, s["heat"], tasks, os.path.join(out, f"fig-{row}.svg"))
    print()
    print(f"figures: {out}/fig-ROW.svg")


def any_moe(runs):
    return any(s["moe"] for s in runs.values())


if __name__ == "__main__":
    main()
