"""The command line and the files shared by the input makers of the prompted tests
(vqa_pictures.py, aqa_clips.py): DIR N SEED [--held-out], then either a manifest asking two
questions of each input or, held out, the answers file that the test checks against."""
import os
import random
import sys


def parse_args():
    """DIR N SEED [--held-out] -> (DIR, N, a random.Random(SEED), held_out); makes DIR."""
    out, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    held_out = "--held-out" in sys.argv[4:]
    rnd = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    return out, n, rnd, held_out


def write(out, held_out, manifest, questions, rows):
    """rows: (file name in DIR, answer 1, answer 2). Held out: DIR/answers.txt, one line per
    input, "PATH|ANSWER1|ANSWER2"; else DIR/MANIFEST (path,prompt,text), two samples per
    input, questions[k] answered by answer k+1."""
    if held_out:
        with open(os.path.join(out, "answers.txt"), "w") as f:
            for name, a, b in rows:
                f.write("%s|%s|%s\n" % (os.path.join(out, name), a, b))
    else:
        with open(os.path.join(out, manifest), "w") as f:
            f.write("path,prompt,text\n")
            for name, a, b in rows:
                f.write("%s,%s,%s\n" % (name, questions[0], a))
                f.write("%s,%s,%s\n" % (name, questions[1], b))
