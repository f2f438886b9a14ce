#!/usr/bin/env bash
# Write a dataset with h5py (tests/data/write_h5py.py), then check it with omnimoe: the
# file a user writes from Python following docs/datasets.md is accepted and described.
set -euo pipefail
py=/usr/bin/python3
if ! "$py" -c 'import h5py, numpy' 2>/dev/null; then
    echo "h5py is not installed for $py (apt-get install python3-h5py)" >&2
    exit 1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" "$OMNI_SOURCE_DIR/tests/data/write_h5py.py" "$dir/user.h5"
"$OMNIMOE" data info "$dir/user.h5" > "$dir/info.txt"
grep -q 'echo *text_to_text *1283 *2 *16 *1 *7' "$dir/info.txt"
grep -q '<task:echo> "hi" <sep> | "hi" <eos>' "$dir/info.txt"
grep -q '\[4 image patches 2x2 of 4 values\] <sep> | "ramp" <eos>' "$dir/info.txt"
# The example of docs/datasets.md, run as printed.
"$py" - "$OMNI_SOURCE_DIR/docs/datasets.md" > "$dir/example.py" <<'PY'
import re, sys
print(re.search(r"```python\n(.*?)```", open(sys.argv[1]).read(), re.S).group(1))
PY
(cd "$dir" && "$py" example.py && "$OMNIMOE" data info mine.h5 > docs.txt)
grep -q 'echo *text_to_text *1283 *2 *16 *1 *7' "$dir/docs.txt"
echo "ok: files written by h5py (the test script and the docs' example) read back"
