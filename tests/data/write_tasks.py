#!/usr/bin/python3
"""Write a small dataset file with h5py (the layout of docs/datasets.md) holding the tasks
named on the command line, for the task-identity tests (tests/train/tasks.sh):

    /usr/bin/python3 write_tasks.py OUT.h5 TASK...

Each TASK is NAME or NAME:FLAGS; its index in the file is its place on the command line
(so the file order can differ from h5py's alphabetical order of groups). FLAGS:
  c   a control task (obs_dim 2, act_dim 1, discrete) instead of text_to_text
  n   no validation samples (its eval values are null)
"""
import sys

import h5py
import numpy as np

TEXT_VOCAB, BINS = 256, 1024
BIN0 = TEXT_VOCAB
PAD, EOS, SEP, TASK0 = BIN0 + BINS, BIN0 + BINS + 1, BIN0 + BINS + 2, BIN0 + BINS + 3


def put(group, name, data):
    """64 KiB chunks, each with its checksum (docs/datasets.md, format 2)."""
    rows = max(1, min(len(data), 65536 // data.dtype.itemsize))
    group.create_dataset(name, data=data, maxshape=(None,), chunks=(rows,), fletcher32=True)


def write_split(group, samples):
    put(group, "tokens", np.concatenate([np.asarray(t, np.uint16) | np.asarray(l, np.uint16) *
                                         0x8000 for t, l in samples])
        if samples else np.zeros(0, np.uint16))
    offsets = np.zeros(len(samples) + 1, np.int64)
    offsets[1:] = np.cumsum([len(t) for t, _ in samples])
    put(group, "offsets", offsets)


def text_to_text(index, i):
    inp, out = f"{i}+{i}".encode(), str(2 * i).encode()
    toks = [TASK0 + index] + list(inp) + [SEP] + list(out) + [EOS]
    return toks, [0] * (len(inp) + 2) + [1] * (len(out) + 1)


def control(index, i):
    toks, loss = [TASK0 + index], [0]
    for t in range(4):
        toks += [BIN0 + (i * 7 + t) % BINS, BIN0 + (i * 3 + t) % BINS, SEP, BIN0 + (i + t) % 2]
        loss += [0, 0, 0, 1]
    return toks, loss


tasks = [a.partition(":") for a in sys.argv[2:]]
with h5py.File(sys.argv[1], "w") as f:
    f.attrs["format"] = "omnimoe-dataset"
    f.attrs["format_version"] = 2
    for k, v in dict(text_vocab=TEXT_VOCAB, bins=BINS, tok_bin0=BIN0, tok_pad=PAD, tok_eos=EOS,
                     tok_sep=SEP, tok_task0=TASK0, n_tasks=len(tasks)).items():
        f.attrs[k] = np.int32(v)
    f.attrs["mulaw_mu"], f.attrs["mulaw_m"] = 100.0, 256.0
    for index, (name, _, flags) in enumerate(tasks):
        g = f.create_group(f"tasks/{name}")
        g.attrs["kind"] = "control" if "c" in flags else "text_to_text"
        g.attrs["index"] = index
        make = text_to_text
        if "c" in flags:
            g.attrs["obs_dim"], g.attrs["act_dim"], g.attrs["discrete"] = 2, 1, 1
            make = control
        write_split(g.create_group("train"), [make(index, i) for i in range(20)])
        write_split(g.create_group("val"), [] if "n" in flags else
                    [make(index, i) for i in range(20, 24)])
