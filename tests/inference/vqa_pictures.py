#!/usr/bin/env python3
"""Pictures and a manifest for the prompted-VQA test (tests/inference/ofa.sh).

usage: vqa_pictures.py DIR N SEED [--held-out]

Writes N 8x8 grey PGM pictures into DIR: dark noise with a 4x4 block of one of three
brightnesses ("dim", "grey", "bright") in one of four quadrants ("top left", ...). Without
--held-out also writes DIR/vqa.csv (path,prompt,text) asking each picture "how bright?" and
"where?" as two samples; with it, DIR/answers.txt: one line per picture, "PATH|BRIGHT|WHERE".
"""
import os

from prompted_inputs import parse_args, write

LEVELS = [("dim", 90), ("grey", 160), ("bright", 240)]
PLACES = ["top left", "top right", "bottom left", "bottom right"]


def main():
    out, n, rnd, held_out = parse_args()
    rows = []
    for i in range(n):
        level, place = rnd.randrange(3), rnd.randrange(4)
        y0, x0 = (place // 2) * 4, (place % 2) * 4
        px = bytearray()
        for y in range(8):
            for x in range(8):
                inside = y0 <= y < y0 + 4 and x0 <= x < x0 + 4
                v = LEVELS[level][1] if inside else 20
                px.append(max(0, min(255, v + rnd.randint(-12, 12))))
        name = "p%04d.pgm" % i
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"P5\n8 8\n255\n" + bytes(px))
        rows.append((name, LEVELS[level][0], PLACES[place]))
    write(out, held_out, "vqa.csv", ("how bright?", "where?"), rows)


main()
