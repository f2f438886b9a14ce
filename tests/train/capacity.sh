#!/usr/bin/env bash
# A capacity-limited run on 2 processes (issue 6): tokens over an expert's capacity are
# dropped, the drop share is reported on the log line and in metrics.jsonl, and the model
# still learns. capacity_factor 0.5 with no balancing pressure makes every step drop.
. "$(dirname "$0")/lib.sh"

must_train 2 cap --set moe.capacity_factor=0.5 --set moe.aux_loss=0 --set optim.steps=30
check drops cap/metrics.jsonl
check routing cap/metrics.jsonl
check falls cap/metrics.jsonl --steps 5 --by 0.9
# The log line: "| drop 12.3% |" with a non-zero share on every step line.
lines=$(grep -c '^step [0-9]*/30 ' cap.log)
[[ $lines -eq 30 ]] || fail "$lines step lines in cap.log, expected 30"
zero=$(grep '^step [0-9]*/30 ' cap.log | grep -c '| drop 0\.0% |')
[[ $zero -eq 0 ]] || fail "$zero step lines report drop 0.0%"
grep -q '| drop [0-9.]*% |' cap.log || fail "no drop share on the log lines"
echo "ok: dropping run reports its drops and learns"
