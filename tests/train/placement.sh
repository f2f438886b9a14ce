#!/usr/bin/env bash
# Checks at start. Expert placement (issue 6): E experts on N processes need E % N == 0 or
# N % E == 0; anything else stops before any work with a configuration error (exit 2), the
# message printed once, and nothing written into out_dir. Tasks whose samples are longer
# than the context are named in a warning (not control or text tasks, whose windows start
# anywhere in a sample).
source "$(dirname "$0")/lib.sh"

cmdline 3 run3 --set moe.num_experts=4
"${cmd[@]}" >bad.log 2>&1
rc=$?
[[ $rc -eq 2 ]] || fail "4 experts on 3 processes: exit $rc, expected 2: $(tail -3 bad.log)"
want='moe.num_experts = 4 on 3 processes: expected num_experts to be a multiple of the number of processes, or the number of processes a multiple of num_experts (replicated experts)'
[[ $(grep -cxF "omnimoe: $want" bad.log) -eq 1 ]] || fail "message: $(grep omnimoe: bad.log)"
[[ ! -e run3 ]] || fail "run3/ was created"
echo "bad: $(grep '^omnimoe:' bad.log)"
# The two accepted shapes: 4 experts on 2 processes, 2 experts on 4 processes.
train 2 ok2 --set moe.num_experts=4 --set optim.steps=2 || fail "4 experts on 2 processes: $(tail -3 ok2.log)"
train 4 ok4 --set moe.num_experts=2 --set optim.steps=2 || fail "2 experts on 4 processes: $(tail -3 ok4.log)"
# A task whose samples do not fit the context is named at start (tiny.yaml: context 32).
grep -q "^omnimoe: warning: task shapes: its samples average 41 positions, more than model.context = 32" ok2.log ||
    fail "no warning for samples longer than the context: $(grep warning ok2.log)"
grep -q "^omnimoe: warning: task tones: its samples average 40 positions" ok2.log ||
    fail "no warning for tones: $(grep warning ok2.log)"
# cartpole's samples (whole episodes, ~1200 positions) are far longer, but a control task's
# targets are spread over its sample and its windows start anywhere in it, so all of it is
# trained over the steps: not warned about (docs/training.md says why).
! grep -q "warning: task cartpole" ok2.log || fail "a control task was warned about: $(grep warning ok2.log)"
train 1 ctx64 --set model.context=64 --set optim.steps=1 --set optim.warmup=0 || fail "context 64: $(tail -3 ctx64.log)"
! grep -q "warning: task" ctx64.log || fail "a warning at context 64: $(grep warning ctx64.log)"
echo "ok: placement checked before start; long samples named"
