#!/usr/bin/env bash
# The omnimoe command: help, version, usage errors and config errors with their exit codes.
. "$(dirname "$0")/../lib/common.sh"
make_tmp

# expect CODE PATTERN -- command...: the exit code is CODE and the output matches PATTERN.
expect() {
  local code=$1 pattern=$2; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [[ $rc -ne $code ]] || ! grep -qE -- "$pattern" <<<"$out"; then
    count_fail "$* -> exit $rc (want $code), output:"; echo "$out" | head -20
    echo "  wanted pattern: $pattern"
  else
    count_pass
  fi
}

expect 0 "^usage: omnimoe COMMAND" -- "$bin" --help
expect 0 "train EXP.yaml" -- "$bin" help
expect 2 "no command given" -- "$bin"
expect 2 "^omnimoe: unknown command 'fly'" -- "$bin" fly
expect 0 "MPI +Open MPI" -- "$bin" --version
expect 0 "HDF5 +[0-9]+\.[0-9]+\.[0-9]+ \(parallel\)" -- "$bin" --version
expect 0 "OpenBLAS +OpenBLAS [0-9]" -- "$bin" --version
expect 0 "libyaml +0\.[0-9]" -- "$bin" --version
expect 0 "^usage: omnimoe train" -- "$bin" train --help
expect 0 "\| \`moe.top_k\` \| integer" -- "$bin" train --keys
expect 2 "train: no experiment file given" -- "$bin" train
expect 2 "train: unknown option '--bogus'" -- "$bin" train x.yaml --bogus
expect 2 "train: option --set needs a value" -- "$bin" train x.yaml --set
expect 2 "/nonexistent/e.yaml: cannot open" -- "$bin" train /nonexistent/e.yaml
printf 'experiment: {name: t}\ndata: {files: [a.h5]}\nmoe: {topk: 2}\n' > "$tmp/e.yaml"
expect 2 "^omnimoe: $tmp/e.yaml:3:7: unknown key moe.topk, did you mean moe.top_k\?" -- "$bin" train "$tmp/e.yaml"
printf 'experiment: {name: t}\ndata: {files: [a.h5]}\n' > "$tmp/ok.yaml"
expect 2 "^omnimoe: --set model.n_heads=7: model.n_heads = 7 does not divide" -- "$bin" train "$tmp/ok.yaml" --set model.n_heads=7
expect 0 "^usage: omnimoe data" -- "$bin" data --help
expect 2 "data: unknown subcommand 'eat'" -- "$bin" data eat
expect 0 "^usage: omnimoe ckpt" -- "$bin" ckpt --help
for f in "$src"/configs/*.yaml; do
  # Every shipped experiment is valid, and --check prints its effective configuration.
  expect 0 "^  top_k: [0-9]+" -- "$bin" train "$f" --check
done
expect 0 "^  d_model: 64$" -- "$bin" train "$tmp/ok.yaml" --check --set model.d_model=64
echo "cli: $passes passed, $fails failed"
[[ $fails -eq 0 ]]
