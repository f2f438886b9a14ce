#!/usr/bin/env bash
# Training reads its dataset in windows (issue 15): a process's memory does not grow with
# the dataset. The same tiny experiment trains on a 1 MiB-of-text dataset and on one of
# 48 MiB of text (a 96 MiB file, more than the process's whole resident set with the small
# one); the peak resident set of the second may exceed the first's by at most 24 MiB (its
# 4 MiB cache, HDF5's metadata, and noise). Format 1 held each file whole: about 5 bytes
# per element, so +240 MiB here. (ulimit -v cannot be the guard: Open MPI and OpenBLAS
# reserve far more address space than they touch, so a limit that would catch a whole
# load also stops MPI_Init.)
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
make_tmp
cd "$tmp"
# Deterministic text: numbered lines.
awk 'BEGIN { for (i = 0; i < 40000; i++) printf "line %08d of the small corpus, some words\n", i }' > small.txt
awk 'BEGIN { for (i = 0; i < 1100000; i++) printf "line %08d of the large corpus, words and words\n", i }' > large.txt
for n in small large; do
  printf 'tasks:\n  - {name: corpus, kind: text, files: [%s.txt], val_fraction: 0.01}\n' $n > $n.yaml
  "$bin" data build $n.yaml --out $n.h5 > /dev/null
  cat > $n-exp.yaml <<EOT
experiment: {name: mem, out_dir: out-$n, seed: 1}
model:      {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, context: 64}
moe:        {num_experts: 2, top_k: 1, every: 2, expert_ff: 64}
data:       {files: [$n.h5], batch: 8, cache_mb: 4}
optim:      {steps: 30, warmup: 1}
parallel:   {threads: 1}
log:        {every: 10}
eval:       {every: 30, batches: 2}
EOT
  /usr/bin/time -f "%M" -o $n.rss "$bin" train $n-exp.yaml > $n.log 2>&1 ||
    fail "training on $n.h5: $(tail -3 $n.log)"
  grep -q "^done: 30 steps" $n.log || fail "training on $n.h5 did not finish: $(tail -3 $n.log)"
done
size=$(stat -c %s large.h5)
small=$(cat small.rss) large=$(cat large.rss)
echo "dataset $((size >> 20)) MiB; peak RSS $((small >> 10)) MiB (1 MiB of text), $((large >> 10)) MiB (48 MiB of text)"
[[ $size -gt $((large * 1024)) ]] || fail "the large dataset ($size bytes) is not larger than the process ($large KiB)"
[[ $((large - small)) -le $((24 * 1024)) ]] ||
  fail "peak RSS grew by $(((large - small) >> 10)) MiB with the dataset, expected at most 24"
echo "ok: training's memory does not grow with its dataset"
