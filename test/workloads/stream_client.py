#!/usr/bin/env python3
"""stream_client.py — a client outside the container, streaming through its moves.

    stream_client.py <stats-file> <host> <port>

Connects once and streams numbered 64-byte records (one every millisecond,
at most 256 unanswered) while reading the echo back; every record must come
back once, in order, unchanged. Every 100 ms it rewrites <stats-file> with
a JSON object: sent, echoed, the longest gap between two echoes (ms), and
the first error (null while there is none). At SIGTERM it stops sending,
waits up to 15 s for the outstanding echoes, writes the stats a last time
with "done": true, and exits.
"""
import json
import os
import select
import signal
import socket
import sys
import time

stats_file, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
stop = [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
stats = {"sent": 0, "echoed": 0, "maxGapMs": 0.0, "error": None, "done": False}


def save():
    with open(stats_file + ".tmp", "w") as f:
        json.dump(stats, f)
    os.rename(stats_file + ".tmp", stats_file)


def record(n):
    return f"{n:020d}".encode() + bytes((n + i) % 256 for i in range(44))


sock = socket.create_connection((host, port), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.setblocking(False)
pending = b""
last_echo = time.monotonic()
last_save = 0.0
deadline = None
try:
    while True:
        now = time.monotonic()
        if stop[0] and deadline is None:
            deadline = now + 15
        if deadline is not None and (stats["echoed"] == stats["sent"] or now > deadline):
            break
        if not stop[0] and stats["sent"] - stats["echoed"] < 256:
            sock.sendall(record(stats["sent"]))
            stats["sent"] += 1
        readable, _, _ = select.select([sock], [], [], 0.001)
        if readable:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            pending += data
            while len(pending) >= 64:
                got, pending = pending[:64], pending[64:]
                if got != record(stats["echoed"]):
                    raise ValueError(f"record {stats['echoed']} came back wrong or out of order")
                stats["echoed"] += 1
                stats["maxGapMs"] = max(stats["maxGapMs"], (time.monotonic() - last_echo) * 1000)
                last_echo = time.monotonic()
        if now - last_save > 0.1:
            save()
            last_save = now
except Exception as e:  # noqa: BLE001 — any failure is the verdict
    stats["error"] = f"{type(e).__name__}: {e}"
stats["done"] = True
save()
