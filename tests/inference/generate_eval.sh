#!/usr/bin/env bash
# generate and eval end to end on the demo data:
#  - a tiny MoE model trained here for 300 steps on the shapes task alone captions the
#    validation pictures with exact match well above chance (100 captions are possible:
#    chance is 1%; the bar is 15%; ~40% is typical);
#  - eval prints the same numbers on 1 and 2 processes;
#  - generate captions a PNG, and answers --json with tokens;
#  - bad input exits 2 with a message naming the thing and the fault: unknown task, a task
#    of the wrong kind for the input, a missing image, an undecodable image, an undecodable
#    WAV, a checkpoint without its tokenization, an eval task the model does not have.
. "$(dirname "$0")/../lib/common.sh"
make_tmp

"$bin" data demo --out "$tmp/demo.h5" > "$tmp/data.log" 2>&1 || { cat "$tmp/data.log"; exit 1; }
tiny=(--set "data.files=[$tmp/demo.h5]" --set model.context=48 --set model.d_model=64)
"$bin" train "$src/tests/train/tiny.yaml" "${tiny[@]}" --set "experiment.out_dir=$tmp/cap" \
  --set "data.tasks={shapes: 1.0}" --set optim.steps=400 --set optim.warmup=20 \
  --set data.batch=16 --set log.every=100 > "$tmp/train.log" 2>&1 ||
  { tail -20 "$tmp/train.log"; exit 1; }
ckpt=$tmp/cap/ckpt-00000400.h5
# a model of every demo task (2 steps: only its shape matters) for the kind checks
"$bin" train "$src/tests/train/tiny.yaml" "${tiny[@]}" --set "experiment.out_dir=$tmp/all" \
  --set optim.steps=2 > "$tmp/train_all.log" 2>&1 || { tail -20 "$tmp/train_all.log"; exit 1; }
all=$tmp/all/ckpt-00000002.h5

# captions well above chance, and the same numbers on 1 and 2 processes
"$bin" eval "$ckpt" "$tmp/demo.h5" --tasks shapes --limit 100 --json "$tmp/e1.json" \
  > "$tmp/e1.txt" 2>&1 || { cat "$tmp/e1.txt"; count_fail "eval on 1 process"; }
mpi 2 "$bin" eval "$ckpt" "$tmp/demo.h5" --tasks shapes --limit 100 --json "$tmp/e2.json" \
  > "$tmp/e2.txt" 2>&1 || { cat "$tmp/e2.txt"; count_fail "eval on 2 processes"; }
cat "$tmp/e1.txt"
cmp -s "$tmp/e1.json" "$tmp/e2.json" || { diff "$tmp/e1.json" "$tmp/e2.json"; count_fail "eval differs on 1 and 2 processes"; }
em=$(sed -nE 's/.*"shapes": \{.*"exact_match": ([0-9.]+).*/\1/p' "$tmp/e1.json")
awk -v e="${em:-0}" 'BEGIN { exit !(e >= 0.15) }' || count_fail "shapes exact match ${em:-?}, want >= 0.15"
grep -q '"cer": ' "$tmp/e1.json" || count_fail "no cer in the eval JSON"
# every kind on 1 and 2 processes (the untrained model: the numbers only have to agree)
"$bin" eval "$all" "$tmp/demo.h5" --limit 6 --json "$tmp/a1.json" > /dev/null 2>&1 || count_fail "eval of every kind"
mpi 2 "$bin" eval "$all" "$tmp/demo.h5" --limit 6 --json "$tmp/a2.json" > /dev/null 2>&1 || count_fail "eval of every kind, 2 processes"
cmp -s "$tmp/a1.json" "$tmp/a2.json" || { diff "$tmp/a1.json" "$tmp/a2.json"; count_fail "eval of every kind differs on 1 and 2 processes"; }
grep -q '"action_accuracy"' "$tmp/a1.json" || count_fail "no action_accuracy for cartpole"

# generate from a PNG (any size: resized as data build does), text and JSON
img=$(ls "$src"/tests/data/img/*.png | head -1)
out=$("$bin" generate "$ckpt" --task shapes --image "$img" 2>&1) || count_fail "generate from $img: $out"
[[ -n "$out" ]] || count_fail "generate printed nothing"
echo "caption of $(basename "$img"): $out"
out=$(mpi 2 "$bin" generate "$ckpt" --task shapes --image "$img" --json 2>&1) || count_fail "generate --json on 2 processes: $out"
grep -q '"tokens": \[' <<<"$out" || count_fail "generate --json: $out"
out=$("$bin" generate "$ckpt" --task shapes --image "$img" --beam 3 2>&1) || count_fail "generate --beam 3: $out"

# bad input: exit 2 and a message naming the thing and the fault
expect2() { # WHAT PATTERN CMD...
  local what=$1 pat=$2 out rc
  shift 2
  out=$("$@" 2>&1)
  rc=$?
  if [[ $rc -ne 2 ]] || ! grep -q -- "$pat" <<<"$out"; then
    count_fail "$what: exit $rc (want 2), message: $(head -1 <<<"$out") (want '$pat')"
  fi
}
printf 'not a png' > "$tmp/bad.png"
printf 'RIFF\0\0\0\0WAVEjunk' > "$tmp/bad.wav"
expect2 "unknown task" "has no task 'nope'" "$bin" generate "$ckpt" --task nope --text hi
expect2 "wrong kind" "task shapes is image_to_text: it takes --image" \
  "$bin" generate "$ckpt" --task shapes --text hi
expect2 "wrong kind (audio for text)" "task arith is text_to_text: it takes --text STR, not --audio" \
  "$bin" generate "$all" --task arith --audio "$tmp/bad.wav"
expect2 "missing image" "$tmp/none.png" "$bin" generate "$ckpt" --task shapes --image "$tmp/none.png"
expect2 "undecodable image" "$tmp/bad.png" "$bin" generate "$ckpt" --task shapes --image "$tmp/bad.png"
expect2 "undecodable WAV" "$tmp/bad.wav" "$bin" generate "$all" --task tones --audio "$tmp/bad.wav"
expect2 "undecodable image, 2 processes" "$tmp/bad.png" \
  mpi 2 "$bin" generate "$ckpt" --task shapes --image "$tmp/bad.png"
expect2 "eval: unknown task" "task nope of --tasks" "$bin" eval "$ckpt" "$tmp/demo.h5" --tasks nope
expect2 "eval: missing data" "$tmp/none.h5" "$bin" eval "$ckpt" "$tmp/none.h5"
if "$py" -c "import h5py" 2> /dev/null; then
  cp "$ckpt" "$tmp/old.h5"
  "$py" - "$tmp/old.h5" << 'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    del f["tokenization"]
    f.attrs["format_version"] = 1
EOF
  expect2 "checkpoint without tokenization" "$tmp/old.h5" \
    "$bin" generate "$tmp/old.h5" --task shapes --image "$img"
  expect2 "checkpoint without tokenization (eval)" "$tmp/old.h5" \
    "$bin" eval "$tmp/old.h5" "$tmp/demo.h5"
  # generate prepares an image as the model's data was built (image.resize, kept in the
  # checkpoint's tokenization): under `error`, an image of another size is refused
  for mode in error crop; do
    cp "$ckpt" "$tmp/$mode.h5"
    "$py" - "$tmp/$mode.h5" "$mode" << 'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["tokenization"].attrs["image_resize"] = sys.argv[2]
EOF
  done
  "$bin" ckpt info "$tmp/error.h5" | grep -q "^images       32x32, 3 channels, patch 8, resize error$" ||
    count_fail "ckpt info does not show image.resize: $("$bin" ckpt info "$tmp/error.h5" | grep '^images')"
  expect2 "generate, image.resize error" \
    "$img: image is [0-9]*x[0-9]* (width x height), expected 32x32 (image.size), and image.resize is error" \
    "$bin" generate "$tmp/error.h5" --task shapes --image "$img"
  expect2 "eval on data whose images were fitted otherwise" \
    "$tmp/demo.h5: task shapes has other image settings than the model was trained with: size 32, 3 channel(s), patch 8, resize stretch in the data; size 32, 3 channel(s), patch 8, resize error in the model" \
    "$bin" eval "$tmp/error.h5" "$tmp/demo.h5" --tasks shapes --limit 2
  expect2 "checkpoint with an unknown image_resize" \
    "$tmp/crop.h5: attribute image_resize of /tokenization is \"crop\", expected stretch, pad or error" \
    "$bin" generate "$tmp/crop.h5" --task shapes --image "$img"
else
  count_fail "h5py is not installed for $py (apt-get install python3-h5py)"
fi
echo "generate/eval: $fails failed"
[[ $fails -eq 0 ]]
