#!/usr/bin/env python3
"""Checks on the metrics.jsonl of training runs (docs/metrics.md), for tests/train.

  jsonl.py same A B [--from S]           training objects of steps >= S are identical in
                                         every field but the timings (bit-identical losses)
  jsonl.py close A B --rtol R [--from S] losses and per-task losses agree to relative R,
                                         expert loads and drop shares exactly
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
        for k in ("expert_load", "drop_share"):
            if a[s][k] != b[s][k]:
                sys.exit(f"FAIL: step {s}: {k} {a[s][k]} in {args.a}, {b[s][k]} in {args.b}")
    print(f"close: {len(a)} steps, largest relative loss difference {worst:.3g} "
          f"({where or 'none'}), expert loads identical")


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
        q.set_defaults(fn=fn)
    q = sub.add_parser("drops")
    q.add_argument("a")
    q.set_defaults(fn=cmd_drops)
    q = sub.add_parser("falls")
    q.add_argument("a")
    q.add_argument("--steps", type=int, default=5)
    q.add_argument("--by", type=float, default=0.9)
    q.set_defaults(fn=cmd_falls)
    q = sub.add_parser("last-step")
    q.add_argument("a")
    q.set_defaults(fn=cmd_last_step)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
