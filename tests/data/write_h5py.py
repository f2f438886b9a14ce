#!/usr/bin/python3
"""Write a dataset file from Python with h5py, following docs/datasets.md; the tests
read it (tests/data/h5py_written.h5 is this script's output).

    /usr/bin/python3 write_h5py.py OUT.h5
"""
import sys

import h5py
import numpy as np

TEXT_VOCAB, BINS = 256, 1024
BIN0 = TEXT_VOCAB
PAD, EOS, SEP, TASK0 = BIN0 + BINS, BIN0 + BINS + 1, BIN0 + BINS + 2, BIN0 + BINS + 3
PATCH = 0x7FFF  # the id of a patch element in `tokens`
LOSS = 0x8000  # the loss flag in `tokens`


def put(group, name, data):
    """An array as omnimoe reads it best: chunks of at most 64 KiB, each with its checksum."""
    row = data.dtype.itemsize * (data.shape[1] if data.ndim == 2 else 1)
    rows = max(1, min(len(data), 65536 // row))
    group.create_dataset(name, data=data, maxshape=(None,) + data.shape[1:],
                         chunks=(rows,) + data.shape[1:], fletcher32=True)


def write_split(group, samples, patch_dim=0):
    """samples: list of (tokens, loss, patches) with patches [n, patch_dim] uint8 or None."""
    tokens = np.concatenate([np.asarray(s[0], np.uint16) | np.asarray(s[1], np.uint16) * LOSS
                             for s in samples]) if samples else np.zeros(0, np.uint16)
    offsets = np.zeros(len(samples) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s[0]) for s in samples])
    put(group, "tokens", tokens)
    put(group, "offsets", offsets)
    if patch_dim:
        counts = [0 if s[2] is None else len(s[2]) for s in samples]
        poff = np.zeros(len(samples) + 1, np.int64)
        poff[1:] = np.cumsum(counts)
        put(group, "patch_offsets", poff)
        put(group, "patches", np.concatenate([s[2] for s in samples]).astype(np.uint8) if samples
            else np.zeros((0, patch_dim), np.uint8))


def text_to_text(task_index, inp, out):
    toks = [TASK0 + task_index] + list(inp.encode()) + [SEP] + list(out.encode()) + [EOS]
    loss = [0] * (len(inp.encode()) + 2) + [1] * (len(out.encode()) + 1)
    return toks, loss, None


def image_to_text(task_index, patches, caption):
    n = len(patches)
    toks = [TASK0 + task_index] + [PATCH] * n + [SEP] + list(caption.encode()) + [EOS]
    loss = [0] * (n + 2) + [1] * (len(caption.encode()) + 1)
    return toks, loss, patches


with h5py.File(sys.argv[1], "w") as f:
    f.attrs["format"] = "omnimoe-dataset"
    f.attrs["format_version"] = 2
    for k, v in dict(text_vocab=TEXT_VOCAB, bins=BINS, tok_bin0=BIN0, tok_pad=PAD, tok_eos=EOS,
                     tok_sep=SEP, tok_task0=TASK0, n_tasks=2).items():
        f.attrs[k] = np.int32(v)
    f.attrs["mulaw_mu"], f.attrs["mulaw_m"] = 100.0, 256.0
    f.attrs["image_size"], f.attrs["image_channels"], f.attrs["image_patch"] = 4, 1, 2

    echo = f.create_group("tasks/echo")
    echo.attrs["kind"], echo.attrs["index"] = "text_to_text", 0
    write_split(echo.create_group("train"), [text_to_text(0, "hi", "hi"),
                                             text_to_text(0, "abc", "abc")])
    write_split(echo.create_group("val"), [text_to_text(0, "ok", "ok")])

    pics = f.create_group("tasks/pics")
    pics.attrs["kind"], pics.attrs["index"] = "image_to_text", 1
    grid = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    # 2x2 patches in raster order, each patch's pixels row by row.
    patches = grid.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
    write_split(pics.create_group("train"), [image_to_text(1, patches, "ramp")], patch_dim=4)
    write_split(pics.create_group("val"), [], patch_dim=4)
