#!/usr/bin/env bash
# Issue 17, the audio_text_to_text kind trained through the binary: tone clips synthesized
# here (aqa_clips.py: one tone of three pitches, short or long), each asked "how high?" and
# "how long?". A tiny model trained here for 300 steps answers the validation questions with
# exact match >= 0.8 (chance: 1/3 and 1/2), and the two questions about each of 12 fresh
# clips (generate --audio --text) right for at least 9 of them (both right by chance: 1 in
# 6 a clip); eval and generate give the same output on 1 and 2 processes.
. "$(dirname "$0")/../lib/common.sh"
mpiexec=${1:-mpiexec}
make_tmp

$py "$src/tests/inference/aqa_clips.py" "$tmp/train" 300 1 || exit 1
$py "$src/tests/inference/aqa_clips.py" "$tmp/held" 12 2 --held-out || exit 1
cat > "$tmp/spec.yaml" <<SPEC
seed: 1
audio: {sample_rate: 8000, mels: 16, frames: 16, patch: 4, n_fft: 256, hop: 80}
tasks:
  - {name: aqa, kind: audio_text_to_text, manifest: train/aqa.csv, val_fraction: 0.2}
SPEC
"$bin" data build "$tmp/spec.yaml" --out "$tmp/aqa.h5" > "$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; exit 1; }
"$bin" train "$src/tests/train/tiny.yaml" --set "data.files=[$tmp/aqa.h5]" \
  --set "data.tasks={aqa: 1.0}" --set "experiment.out_dir=$tmp/aqa" --set optim.steps=300 \
  --set optim.warmup=10 --set data.batch=16 --set model.context=64 --set log.every=100 \
  > "$tmp/train.log" 2>&1 || { tail -20 "$tmp/train.log"; exit 1; }
ckpt=$tmp/aqa/ckpt-00000300.h5
"$bin" eval "$ckpt" "$tmp/aqa.h5" --json "$tmp/e1.json" > "$tmp/e1.txt" 2>&1 ||
  { cat "$tmp/e1.txt"; count_fail "eval"; }
mpi 2 "$bin" eval "$ckpt" "$tmp/aqa.h5" --json "$tmp/e2.json" > "$tmp/e2.txt" 2>&1 ||
  { cat "$tmp/e2.txt"; count_fail "eval on 2 processes"; }
cat "$tmp/e1.txt"
cmp -s "$tmp/e1.json" "$tmp/e2.json" ||
  { diff "$tmp/e1.json" "$tmp/e2.json"; count_fail "eval differs on 1 and 2 processes"; }
em=$(sed -nE 's/.*"aqa": \{.*"exact_match": ([0-9.]+).*/\1/p' "$tmp/e1.json")
awk -v e="${em:-0}" 'BEGIN { exit !(e >= 0.8) }' || count_fail "aqa exact match ${em:-?}, want >= 0.8"
# two questions about each fresh clip: both right
right=0
while IFS='|' read -r wav high long; do
  a=$("$bin" generate "$ckpt" --task aqa --audio "$wav" --text "how high?" 2>&1)
  b=$("$bin" generate "$ckpt" --task aqa --audio "$wav" --text "how long?" 2>&1)
  echo "$(basename "$wav"): how high? -> $a (want $high); how long? -> $b (want $long)"
  [[ "$a" == "$high" && "$b" == "$long" ]] && right=$((right + 1))
done < "$tmp/held/answers.txt"
[[ $right -ge 9 ]] || count_fail "both questions answered right for $right of 12 fresh clips, want >= 9"
wav=$(head -1 "$tmp/held/answers.txt" | cut -d'|' -f1)
one=$("$bin" generate "$ckpt" --task aqa --audio "$wav" --text "how long?" --json 2>&1)
two=$(mpi 2 "$bin" generate "$ckpt" --task aqa --audio "$wav" --text "how long?" --json 2>&1)
[[ "$one" == "$two" ]] || count_fail "generate differs on 1 and 2 processes: $one / $two"

echo "ofa_audio: $fails failed"
[[ $fails -eq 0 ]]
