#!/usr/bin/env python3
"""Checks on the metrics.jsonl of training runs (docs/metrics.md), for tests/train.

  jsonl.py same A B [--from S]           training objects of steps >= S are identical in
                                         every field but the timings (bit-identical losses)
  jsonl.py close A B --rtol R [--from S] losses and per-task losses agree to relative R,
           [--load-slack F]              expert loads and drop shares exactly (with
                                         --load-slack, loads within F of a layer's
                                         assignments, summed over its experts; the routing
                                         tables then are not compared)
  jsonl.py near A B --steps N --rtol R   the mean losses of the last N steps agree to R
  jsonl.py routing A [--k K]             the routing tables (task/modality x expert) add up:
                                         to expert_load, to the drop share, to K per token
  jsonl.py drops A                       every step dropped some assignments (drop_share > 0)
  jsonl.py falls A --steps N --by F      the mean loss of the last N steps is below F times
                                         the mean of the first N
  jsonl.py last-step A                   print the last training step logged

When a run was resumed into the same directory, a step may be logged twice (once before
the interruption, once after the resume): the last object of each step counts. Standard
library only, so any python3 runs it. Exit status 1 with the reason on a mismatch.
"""
import argparse
import json
import math
import sys

TIMINGS = ("tokens_per_s", "elapsed_s", "eta_s")


def load(path, first=0):
    """The training objects of a metrics.jsonl by step (eval objects left out)."""
    steps = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                sys.exit(f"FAIL: {path}:{n}: not JSON: {e}")
            if obj.get("eval"):
                continue
            if obj["step"] >= first:
                steps[obj["step"]] = obj
    if not steps:
        sys.exit(f"FAIL: {path}: no training steps >= {first}")
    return steps


ROUTE_COUNTS = ("task_expert_load", "task_expert_drop", "task_tokens", "modality_expert_load",
                "modality_expert_drop", "modality_tokens", "dead_experts")
ROUTE_REALS = ("task_expert_prob", "modality_expert_prob", "task_entropy", "modality_entropy",
               "task_mean_entropy", "modality_mean_entropy")


def leaves(path, x, y):
    """(path, a, b) for every number of two JSON values of the same shape."""
    if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
        for k in x:
            yield from leaves(f"{path}.{k}", x[k], y[k])
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            yield from leaves(f"{path}[{i}]", u, v)
    elif isinstance(x, (dict, list)) or isinstance(y, (dict, list)):
        yield path, None, 0.0  # shapes differ: reported as a difference
    else:
        yield path, x, y


def same_steps(a, b, pa, pb):
    if sorted(a) != sorted(b):
        sys.exit(f"FAIL: steps differ: {pa} has {sorted(a)}, {pb} has {sorted(b)}")


def rel(x, y):
    if x is None or y is None:
        return 0.0 if x is None and y is None else math.inf
    return abs(x - y) / max(abs(x), abs(y), 1e-30)


def cmd_same(args):
    a, b = load(args.a, args.first), load(args.b, args.first)
    same_steps(a, b, args.a, args.b)
    for s in sorted(a):
        for k in sorted(set(a[s]) | set(b[s])):
            if k in TIMINGS:
                continue
            if a[s].get(k) != b[s].get(k):
                sys.exit(f"FAIL: step {s}: {k} is {a[s].get(k)!r} in {args.a}, "
                         f"{b[s].get(k)!r} in {args.b}")
    print(f"identical: {len(a)} steps ({min(a)}..{max(a)}), every field but the timings")


def cmd_close(args):
    a, b = load(args.a, args.first), load(args.b, args.first)
    same_steps(a, b, args.a, args.b)
    worst, where = 0.0, ""
    for s in sorted(a):
        pairs = [("loss", a[s]["loss"], b[s]["loss"])]
        pairs += [(f"task_loss.{t}", v, b[s]["task_loss"].get(t))
                  for t, v in a[s]["task_loss"].items()]
        for name, x, y in pairs:
            r = rel(x, y)
            if r > worst:
                worst, where = r, f"step {s} {name}: {x!r} vs {y!r}"
            if r > args.rtol:
                sys.exit(f"FAIL: step {s}: {name} {x!r} vs {y!r}: relative difference "
                         f"{r:.3g} > {args.rtol:g}")
        if args.load_slack is not None:
            for layer, (la, lb) in enumerate(zip(a[s]["expert_load"], b[s]["expert_load"])):
                moved = sum(abs(x - y) for x, y in zip(la, lb))
                if moved > args.load_slack * max(sum(la), 1):
                    sys.exit(f"FAIL: step {s}: layer {layer} loads {la} vs {lb}: {moved} "
                             f"assignments moved, more than {args.load_slack:g} of {sum(la)}")
            continue
        for k in ("expert_load", "drop_share") + ROUTE_COUNTS:
            if a[s].get(k) != b[s].get(k):
                sys.exit(f"FAIL: step {s}: {k} {a[s].get(k)} in {args.a}, {b[s].get(k)} in {args.b}")
        for k in ROUTE_REALS:
            for path, x, y in leaves(k, a[s].get(k), b[s].get(k)):
                if rel(x, y) > args.rtol:
                    sys.exit(f"FAIL: step {s}: {path} {x!r} vs {y!r}: relative difference "
                             f"{rel(x, y):.3g} > {args.rtol:g}")
    if args.load_slack is not None:
        print(f"close: {len(a)} steps, largest relative loss difference {worst:.3g} "
              f"({where or 'none'}), expert loads within {args.load_slack:g} of the assignments")
        return
    print(f"close: {len(a)} steps, largest relative loss difference {worst:.3g} "
          f"({where or 'none'}), expert loads and routing counts identical, router "
          f"probabilities and entropies within {args.rtol:g}")


def cmd_routing(args):
    a = load(args.a)
    for s in sorted(a):
        o = a[s]
        for k in ROUTE_COUNTS + ROUTE_REALS:
            if k not in o:
                sys.exit(f"FAIL: step {s}: no {k}")
        tokens = sum(o["task_tokens"].values())
        if tokens != sum(o["modality_tokens"].values()):
            sys.exit(f"FAIL: step {s}: task and modality tokens differ")
        layer_drops = {}
        for l, loads in enumerate(o["expert_load"]):
            for table in ("task", "modality"):
                kept = o[f"{table}_expert_load"][l]
                drop = o[f"{table}_expert_drop"][l]
                col = [sum(row[e] for row in kept.values()) for e in range(len(loads))]
                if col != loads:
                    sys.exit(f"FAIL: step {s} layer {l}: {table}_expert_load sums to {col}, "
                             f"expert_load is {loads}")
                assigned = sum(map(sum, kept.values())) + sum(map(sum, drop.values()))
                if assigned != args.k * tokens:
                    sys.exit(f"FAIL: step {s} layer {l}: {assigned} assignments in "
                             f"{table}_expert_load/drop, expected k x tokens = {args.k * tokens}")
                dropped = sum(map(sum, drop.values()))
                layer_drops.setdefault(table, []).append((dropped, assigned))
                for g, p in o[f"{table}_expert_prob"][l].items():
                    if p[0] is not None and abs(sum(p) - 1) > 1e-5:
                        sys.exit(f"FAIL: step {s} layer {l}: {table} {g} probabilities sum "
                                 f"to {sum(p)}")
            dead = [e for e, v in enumerate(loads) if v == 0]
            if dead != o["dead_experts"][l]:
                sys.exit(f"FAIL: step {s} layer {l}: dead_experts {o['dead_experts'][l]}, "
                         f"loads {loads}")
        for table, pairs in layer_drops.items():
            share = sum(d for d, _ in pairs) / max(1, sum(n for _, n in pairs))
            if abs(share - o["drop_share"]) > 1e-12:
                sys.exit(f"FAIL: step {s}: {table} drops give a share of {share}, drop_share "
                         f"is {o['drop_share']}")
    print(f"routing: {len(a)} steps, tables add up to the expert loads and drop shares")


def cmd_drops(args):
    a = load(args.a)
    for s in sorted(a):
        if not a[s]["drop_share"] or a[s]["drop_share"] <= 0:
            sys.exit(f"FAIL: step {s}: drop_share {a[s]['drop_share']!r}, expected > 0")
    shares = [a[s]["drop_share"] for s in sorted(a)]
    print(f"drops: every one of {len(a)} steps dropped, share {min(shares):.3g}..{max(shares):.3g}")


def cmd_falls(args):
    a = load(args.a)
    losses = [a[s]["loss"] for s in sorted(a)]
    if len(losses) < 2 * args.steps:
        sys.exit(f"FAIL: {len(losses)} steps logged, need {2 * args.steps}")
    head = sum(losses[: args.steps]) / args.steps
    tail = sum(losses[-args.steps:]) / args.steps
    if not tail < args.by * head:
        sys.exit(f"FAIL: loss {head:.4f} over the first {args.steps} steps, {tail:.4f} over "
                 f"the last: expected below {args.by} times")
    print(f"falls: mean loss {head:.4f} -> {tail:.4f}")


def cmd_near(args):
    means = []
    for path in (args.a, args.b):
        losses = [v["loss"] for _, v in sorted(load(path).items())]
        if len(losses) < args.steps:
            sys.exit(f"FAIL: {path}: {len(losses)} steps logged, need {args.steps}")
        means.append(sum(losses[-args.steps:]) / args.steps)
    r = rel(means[0], means[1])
    if r > args.rtol:
        sys.exit(f"FAIL: mean loss of the last {args.steps} steps {means[0]:.4f} in {args.a}, "
                 f"{means[1]:.4f} in {args.b}: relative difference {r:.3g} > {args.rtol:g}")
    print(f"near: mean loss of the last {args.steps} steps {means[0]:.4f} vs {means[1]:.4f} "
          f"(relative {r:.3g}, at most {args.rtol:g})")


def cmd_last_step(args):
    print(max(load(args.a)))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("same", cmd_same), ("close", cmd_close)):
        q = sub.add_parser(name)
        q.add_argument("a")
        q.add_argument("b")
        q.add_argument("--from", dest="first", type=int, default=0)
        if name == "close":
            q.add_argument("--rtol", type=float, required=True)
            q.add_argument("--load-slack", type=float, default=None)
        q.set_defaults(fn=fn)
    q = sub.add_parser("routing")
    q.add_argument("a")
    q.add_argument("--k", type=int, default=2)
    q.set_defaults(fn=cmd_routing)
    q = sub.add_parser("drops")
    q.add_argument("a")
    q.set_defaults(fn=cmd_drops)
    q = sub.add_parser("falls")
    q.add_argument("a")
    q.add_argument("--steps", type=int, default=5)
    q.add_argument("--by", type=float, default=0.9)
    q.set_defaults(fn=cmd_falls)
    q = sub.add_parser("near")
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--steps", type=int, required=True)
    q.add_argument("--rtol", type=float, required=True)
    q.set_defaults(fn=cmd_near)
    q = sub.add_parser("last-step")
    q.add_argument("a")
    q.set_defaults(fn=cmd_last_step)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
