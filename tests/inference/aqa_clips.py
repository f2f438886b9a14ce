#!/usr/bin/env python3
"""Tone clips and a manifest for the audio-question test (tests/inference/ofa_audio.sh).

usage: aqa_clips.py DIR N SEED [--held-out]

Writes N WAV clips (8 kHz, 16-bit mono, 1280 samples: the 16 frames of hop 80 that the
test's spec takes) into DIR: faint noise with one tone of one of three pitches ("low"
300 Hz, "mid" 1000 Hz, "high" 3000 Hz), either "short" (15-30% of the clip) or "long"
(65-90%), at a random start, loudness and phase. Without --held-out also writes DIR/aqa.csv
(path,prompt,text) asking each clip "how high?" and "how long?" as two samples; with it,
DIR/answers.txt: one line per clip, "PATH|HIGH|LONG". Deterministic from SEED.
"""
import math
import os
import struct
import wave

from prompted_inputs import parse_args, write

RATE, SAMPLES = 8000, 1280
PITCHES = [("low", 300.0), ("mid", 1000.0), ("high", 3000.0)]
LENGTHS = [("short", 0.15, 0.30), ("long", 0.65, 0.90)]


def clip(rnd, hz, share):
    n = int(SAMPLES * share)
    start = rnd.randrange(SAMPLES - n + 1)
    amp, phase, fade = rnd.uniform(0.2, 0.8), rnd.uniform(0, 2 * math.pi), 40
    x = [0.003 * rnd.gauss(0, 1) for _ in range(SAMPLES)]
    for j in range(n):
        env = min(1.0, j / fade, (n - j) / fade)
        x[start + j] += amp * env * math.sin(phase + 2 * math.pi * hz * j / RATE)
    return b"".join(struct.pack("<h", max(-32767, min(32767, int(v * 32767)))) for v in x)


def main():
    out, n, rnd, held_out = parse_args()
    rows = []
    for i in range(n):
        pitch, length = rnd.randrange(3), rnd.randrange(2)
        name = "c%04d.wav" % i
        with wave.open(os.path.join(out, name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            share = rnd.uniform(LENGTHS[length][1], LENGTHS[length][2])
            w.writeframes(clip(rnd, PITCHES[pitch][1], share))
        rows.append((name, PITCHES[pitch][0], LENGTHS[length][0]))
    write(out, held_out, "aqa.csv", ("how high?", "how long?"), rows)


main()
