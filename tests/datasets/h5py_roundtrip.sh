#!/usr/bin/env bash
# Write a dataset with h5py (tests/data/write_h5py.py), then check it with omnimoe: the
# file a user writes from Python following docs/datasets.md is accepted and described.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
if ! "$py" -c 'import h5py, numpy' 2>/dev/null; then
    echo "h5py is not installed for $py (apt-get install python3-h5py)" >&2
    exit 1
fi
make_tmp
"$py" "$src/tests/data/write_h5py.py" "$tmp/user.h5"
"$bin" data info "$tmp/user.h5" > "$tmp/info.txt"
grep -q 'echo *text_to_text *1283 *2 *16 *1 *7' "$tmp/info.txt"
grep -q '<task:echo> "hi" <sep> | "hi" <eos>' "$tmp/info.txt"
grep -q '\[4 image patches 2x2 of 4 values\] <sep> | "ramp" <eos>' "$tmp/info.txt"
# The example of docs/datasets.md, run as printed.
"$py" - "$src/docs/datasets.md" > "$tmp/example.py" <<'PY'
import re, sys
print(re.search(r"```python\n(.*?)```", open(sys.argv[1]).read(), re.S).group(1))
PY
(cd "$tmp" && "$py" example.py && "$bin" data info mine.h5 > docs.txt)
grep -q 'echo *text_to_text *1283 *2 *16 *1 *7' "$tmp/docs.txt"
echo "ok: files written by h5py (the test script and the docs' example) read back"
