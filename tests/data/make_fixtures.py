#!/usr/bin/python3
"""Make the small binary fixtures of tests/data (committed; rerun to regenerate).

Run with Debian's Python (it has numpy and h5py): /usr/bin/python3 make_fixtures.py
"""
import os
import struct
import zlib

import h5py
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))


def write_png_grey(path, rows):
    """An 8-bit greyscale PNG written by hand (no PIL needed)."""
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def write_wav(path, samples, rate):
    data = struct.pack("<%dh" % len(samples), *samples)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<I", 16) + fmt)
        f.write(b"data" + struct.pack("<I", len(data)) + data)


os.makedirs(os.path.join(here, "img"), exist_ok=True)
os.makedirs(os.path.join(here, "wav"), exist_ok=True)
# A 4x4 PGM with pixel values 0, 16, ..., 240 in raster order; a 4x4 PNG of 255 - those.
with open(os.path.join(here, "img", "ramp.pgm"), "wb") as f:
    f.write(b"P5\n# a ramp\n4 4\n255\n" + bytes(16 * i for i in range(16)))
write_png_grey(os.path.join(here, "img", "inverse.png"),
               [[255 - 16 * (4 * y + x) for x in range(4)] for y in range(4)])
# 0.1 s of a 1 kHz tone at 8 kHz.
t = np.arange(800) / 8000.0
write_wav(os.path.join(here, "wav", "tone.wav"),
          [int(v) for v in np.round(12000 * np.sin(2 * np.pi * 1000 * t))], 8000)
# Two control episodes: observations [T, 1], continuous actions [T, 1].
with h5py.File(os.path.join(here, "episodes.h5"), "w") as f:
    f["observations"] = np.array([[0.0], [1.0], [-1.0]], dtype=np.float32)
    f["actions"] = np.array([[0.5], [-0.5], [0.0]], dtype=np.float32)
    f["episode_offsets"] = np.array([0, 2, 3], dtype=np.int64)
