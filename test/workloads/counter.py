#!/usr/bin/env python3
"""counter.py — a Python program that checks its own state across migrations.

    counter.py <result-file>

The workload protocol of README.md, in Python: set up, write READY, work,
and on SIGTERM verify and write PASS or FAIL <reason>.

State it keeps and checks:
  - 8 MiB of a byte pattern in a bytearray, and a dict of 10,000 entries;
  - a worker thread that keeps counting (it must still be counting at the end);
  - a file in /tmp it wrote, kept open, whose offset must be where it was left;
  - time.monotonic() never going backwards between the loop's iterations
    (a container's clocks continue across hosts).
"""
import os
import signal
import sys
import threading
import time

result = os.path.abspath(sys.argv[1])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
# The worker counts on through the checks: that it still runs is one of them.
finished = threading.Event()

PATTERN = bytes(range(251)) * ((8 << 20) // 251 + 1)
pattern = bytearray(PATTERN[: 8 << 20])
table = {f"key-{i}": i * i for i in range(10_000)}
ticks = [0]


def worker():
    while not finished.is_set():
        ticks[0] += 1
        time.sleep(0.001)


thread = threading.Thread(target=worker, name="ticker", daemon=True)
thread.start()

kept = open("/tmp/counter.py.data", "w+")
kept.write("written before READY\n")
kept.flush()
offset = kept.tell()

with open(result + ".ready.tmp", "w") as f:
    f.write(f"READY {os.getpid()}\n")
os.rename(result + ".ready.tmp", result + ".ready")

failure = None
last = time.monotonic()
iterations = 0
while not stop.is_set():
    now = time.monotonic()
    if now < last and failure is None:
        failure = f"time.monotonic() went back from {last} to {now}"
    last = now
    iterations += 1
    stop.wait(0.005)


def verdict():
    if failure:
        return failure
    if pattern != PATTERN[: 8 << 20]:
        return "the 8 MiB pattern changed"
    if any(table[f"key-{i}"] != i * i for i in range(10_000)):
        return "the dict changed"
    before = ticks[0]
    deadline = time.monotonic() + 5
    while ticks[0] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    if ticks[0] == before:
        return "the worker thread stopped counting"
    if kept.tell() != offset:
        return f"the open file's offset is {kept.tell()}, expected {offset}"
    kept.seek(0)
    if kept.read() != "written before READY\n":
        return "the open file's contents changed"
    return None


why = verdict()
finished.set()
with open(result + ".tmp", "w") as f:
    f.write("PASS\n" if why is None else f"FAIL {why}\n")
os.rename(result + ".tmp", result)
