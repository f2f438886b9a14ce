#!/usr/bin/env python3
"""An environment for omnimoe act's JSON-lines protocol (DESIGN.md 8) that plays one fault.

    fault_env.py MODE [OBS_DIM]

MODE ok: a well-behaved env of OBS_DIM (default 4) observations and one discrete action;
obs = [seed, t, 0, ...] (t = steps taken), reward = the action, done after 5 steps. It checks
every message it gets (exit 3 with a message on stderr when one is wrong), and on EOF of its
stdin exits 0 after writing "closed" to the file named by $FAULT_ENV_LOG (if set).
Other modes behave like ok until they play their fault at the reply to the second step
(reset = reply 0): malformed, not_object, short_obs, huge_obs, no_reward, bad_done, exit_mid
(exits with status 4), close_mid (closes stdout, keeps running), hang (never answers).
"""
import json
import os
import sys
import time

mode = sys.argv[1]
obs_dim = int(sys.argv[2]) if len(sys.argv) > 2 else 4
replies = 0
seed = 0
t = 0


def send(obj):
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # omnimoe gave up on us (a test of its timeout)
        sys.exit(0)


def fail(why):
    sys.stderr.write("fault_env: " + why + "\n")
    sys.exit(3)


def obs():
    return [float(seed), float(t)] + [0.0] * (obs_dim - 2)


for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        fail("not JSON: %r" % line)
    if not isinstance(msg, dict) or len(msg) != 1:
        fail("not a one-key object: %r" % line)
    if "reset" in msg:
        if not isinstance(msg["reset"], int):
            fail("reset seed is not an integer: %r" % line)
        seed, t = msg["reset"], 0
        reply = {"obs": obs()}
    elif "action" in msg:
        a = msg["action"]
        if not (isinstance(a, list) and len(a) == 1 and isinstance(a[0], int)):
            fail("action is not [int]: %r" % line)
        t += 1
        reply = {"obs": obs(), "reward": float(a[0]), "done": t >= 5}
    else:
        fail("unknown message: %r" % line)
    if mode != "ok" and replies == 2:
        if mode == "malformed":
            sys.stdout.write('{"obs": [1, 2,\n')
            sys.stdout.flush()
        elif mode == "not_object":
            send([1, 2, 3, 4])
        elif mode == "short_obs":
            reply["obs"] = reply["obs"][:-1]
            send(reply)
        elif mode == "huge_obs":
            sys.stdout.write('{"obs": [1e300, 0, 0, 0], "reward": 1, "done": false}\n')
            sys.stdout.flush()
        elif mode == "no_reward":
            del reply["reward"]
            send(reply)
        elif mode == "bad_done":
            reply["done"] = "no"
            send(reply)
        elif mode == "exit_mid":
            sys.exit(4)
        elif mode == "close_mid":
            sys.stdout.close()
            os.close(1)
            time.sleep(600)
        elif mode == "hang":
            time.sleep(600)
        else:
            fail("unknown mode " + mode)
        replies += 1
        continue
    send(reply)
    replies += 1

log = os.environ.get("FAULT_ENV_LOG")
if log:
    with open(log, "w") as f:
        f.write("closed\n")
