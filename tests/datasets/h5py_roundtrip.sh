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
echo "ok: a file written by h5py reads back"
