#!/usr/bin/env bash
# A build shared among MPI ranks (issue 15): `mpirun -np N omnimoe data build` writes the
# same content as a 1-process build — every dataset's values and every attribute, compared
# with h5py — for N = 2 and 3, on a spec with a task of each kind (text in three files of
# different sizes and more than 1 MiB, written in rounds of 1 MiB, so several rounds;
# manifests of text, images, audio and prompted images; control episodes with vectors and
# with pictures), each with a validation split. A fault in one rank's share (a missing image,
# a NaN observation) ends every rank with exit status 2 and that fault's message, and leaves
# no output and no temporary file. With --shards each rank writes its share to a file of its
# own: the shards, concatenated split by split, are the 1-process file.
# Called as: shared_build.sh MPIEXEC, with OMNIMOE and OMNI_SOURCE_DIR set by CTest.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
mpiexec=${1:?MPIEXEC}
"$py" -c 'import h5py' 2>/dev/null || fail "h5py is needed ($py, Debian's python3-h5py)"
make_tmp
cd "$tmp"
cp -r "$src/tests/data/img" "$src/tests/data/wav" .
awk 'BEGIN { for (i = 0; i < 30000; i++) printf "line %06d of the first file\n", i }' > a.txt
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "second %05d\n", i }' > b.txt
awk 'BEGIN { for (i = 0; i < 40000; i++) printf "third file, line %06d, more words\n", i }' > c.txt
"$py" - <<'PY'
import h5py, numpy as np
r = np.random.default_rng(3)
with open("qa.csv", "w") as f:
    f.write("input,target\n")
    for i in range(61):
        f.write(f"{i}+{i * 7 % 13},{i + i * 7 % 13}\n")
with open("images.csv", "w") as f:
    f.write("path,text\n")
    for i in range(23):
        f.write(f"img/{'ramp.pgm' if i % 3 else 'inverse.png'},pic {i}\n")
with open("audio.csv", "w") as f:
    for i in range(7):
        f.write(f"wav/tone.wav,tone {i}\n")
with open("vqa.csv", "w") as f:
    f.write("path,prompt,text\n")
    for i in range(19):
        paths = ";".join(["img/ramp.pgm", "img/inverse.png"][: 1 + i % 2])
        f.write(f"{paths},what is {i}?,answer {i}\n")
def episodes(name, n, pixels):
    lens = r.integers(1, 9, n)
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    T = int(off[-1])
    with h5py.File(name, "w") as f:
        f["episode_offsets"] = off
        f["actions"] = r.integers(0, 4, (T, 1)).astype(np.int64)
        if pixels:
            f["images"] = r.integers(0, 256, (T, 8, 8), dtype=np.uint8)
        else:
            f["observations"] = r.normal(size=(T, 3)).astype(np.float32)
episodes("ep.h5", 37, False)
episodes("pix.h5", 29, True)
PY
cat > spec.yaml <<'EOT'
seed: 5
image: {size: 4, channels: 1, patch: 2}
audio: {sample_rate: 8000, mels: 4, frames: 4, patch: 2, n_fft: 64, hop: 32}
tasks:
  - {name: corpus, kind: text, files: [a.txt, b.txt, c.txt], val_fraction: 0.1, chunk: 100}
  - {name: qa, kind: text_to_text, manifest: qa.csv, val_fraction: 0.2}
  - {name: pics, kind: image_to_text, manifest: images.csv, val_fraction: 0.3}
  - {name: sounds, kind: audio_to_text, manifest: audio.csv, val_fraction: 0.3}
  - {name: vqa, kind: image_text_to_text, manifest: vqa.csv, val_fraction: 0.25}
  - {name: ctrl, kind: control, episodes: ep.h5, val_fraction: 0.2}
  - {name: pix, kind: control, episodes: pix.h5, val_fraction: 0.2}
EOT
# 1 MiB per array per round (OMNI_DATA_WRITE_MB; 16 by default): several rounds here.
run() {
    OMNI_DATA_WRITE_MB=1 "$mpiexec" -x OMNI_DATA_WRITE_MB -n "$1" "${flags[@]}" "$bin" data build \
        "${@:2}"
}
"$bin" data build spec.yaml --out one.h5 > one.log 2>&1 || fail "1-process build: $(tail -3 one.log)"
for n in 2 3; do
  run $n spec.yaml --out np$n.h5 > np$n.log 2>&1 || fail "build on $n ranks: $(tail -5 np$n.log)"
done
"$py" - <<'PY' || fail "the shared builds differ from the 1-process build"
import h5py, numpy as np, sys
def walk(f):
    out = {}
    f.visititems(lambda k, v: out.__setitem__(k, v))
    return out
with h5py.File("one.h5") as a:
    ref = walk(a)
    attrs = {k: dict(v.attrs) for k, v in ref.items()}
    attrs["/"] = dict(a.attrs)
    data = {k: v[()] for k, v in ref.items() if isinstance(v, h5py.Dataset)}
    n_val = sum(len(v) - 1 for k, v in data.items() if k.endswith("val/offsets"))
    n_tok = sum(len(v) for k, v in data.items() if k.endswith("tokens"))
    assert n_val > 20 and n_tok > 2_000_000 and len(data) == 44, (n_val, n_tok, len(data))
for n in (2, 3):
    with h5py.File(f"np{n}.h5") as b:
        got = walk(b)
        assert sorted(got) == sorted(ref), (n, sorted(set(got) ^ set(ref)))
        for k, v in got.items():
            assert {x: str(y) for x, y in v.attrs.items()} == \
                   {x: str(y) for x, y in attrs[k].items()}, (n, k)
            if isinstance(v, h5py.Dataset):
                assert v.dtype == data[k].dtype and v.shape == data[k].shape, (n, k)
                assert np.array_equal(v[()], data[k]), (n, k)
                assert v.fletcher32 and v.chunks is not None, (n, k)
        assert {x: str(y) for x, y in b.attrs.items()} == \
               {x: str(y) for x, y in attrs["/"].items()}, n
print("identical content: 1, 2 and 3 processes")
PY
"$bin" data info np2.h5 --verify > info.log 2>&1 || fail "data info --verify: $(tail -3 info.log)"

# --shards: each rank writes its share alone; the shards, one after another, are the file.
for n in 2 3; do
  run $n spec.yaml --out sh$n.h5 --shards > sh$n.log 2>&1 || fail "sharded build on $n ranks: $(tail -5 sh$n.log)"
  [[ $(ls sh$n-*-of-0000$n.h5 | wc -l) -eq $n ]] || fail "expected $n shard files: $(ls sh$n*)"
done
"$py" - <<'PY' || fail "the shards differ from the 1-process build"
import h5py, numpy as np
with h5py.File("one.h5") as a:
    for n in (2, 3):
        shards = [h5py.File(f"sh{n}-{k:05d}-of-{n:05d}.h5") for k in range(n)]
        empty = 0
        for name in a["tasks"]:
            for split in ("train", "val"):
                ref = a[f"tasks/{name}/{split}"]
                parts = [s[f"tasks/{name}/{split}"] for s in shards]
                empty += sum(len(p["offsets"]) == 1 for p in parts)
                for arr, off in (("tokens", "offsets"), ("patches", "patch_offsets")):
                    if arr not in ref:
                        continue
                    got = np.concatenate([p[arr][()] for p in parts])
                    assert np.array_equal(got, ref[arr][()]), (n, name, split, arr)
                    ends = np.cumsum([0] + [p[off][-1] for p in parts])
                    got = np.concatenate([[0]] + [p[off][1:] + e for p, e in zip(parts, ends)])
                    assert np.array_equal(got, ref[off][()]), (n, name, split, off)
        for s in shards:
            assert dict(s.attrs).keys() == dict(a.attrs).keys()
        print(f"{n} shards: their union is the file ({empty} empty task splits)")
PY
for f in sh3-*.h5; do
  "$bin" data info "$f" --verify > info.log 2>&1 || fail "data info --verify $f: $(tail -3 info.log)"
done

# Faults in the share of the last rank: exit 2 on every rank, the message, nothing left.
expect_fault() { # SPEC PATTERN
  local st=0
  run 2 $1 --out bad.h5 > bad.log 2>&1 || st=$?
  [[ $st -eq 2 ]] || fail "$1: exit status $st, expected 2: $(tail -3 bad.log)"
  grep -q -- "$2" bad.log || fail "$1: no message '$2' in: $(cat bad.log)"
  [[ -z $(ls bad.h5* bad-* 2>/dev/null) ]] || fail "$1: output left behind: $(ls bad.h5* bad-*)"
}
sed '$s|^[^,]*|img/gone.png|' images.csv > images_bad.csv
sed 's|images.csv|images_bad.csv|' spec.yaml > bad_image.yaml
expect_fault bad_image.yaml "images_bad.csv:24: .*gone.png"
"$py" -c '
import h5py, shutil
shutil.copy("ep.h5", "ep_bad.h5")
with h5py.File("ep_bad.h5", "r+") as f:
    f["observations"][-2, 1] = float("nan")
'
sed 's|ep.h5|ep_bad.h5|' spec.yaml > bad_ep.yaml
expect_fault bad_ep.yaml "ep_bad.h5: observations\[.*\]\[1\] is not finite"
expect_fault "bad_image.yaml --shards" "images_bad.csv:24: .*gone.png"
echo "ok: shared builds are identical in content, and fail as one"
