#!/usr/bin/env python3
"""echo_server.py — a TCP echo server for network migration tests.

    echo_server.py <result-file> <port>

Listens on 0.0.0.0:<port> and echoes every byte of every connection back, a
thread per connection. READY once listening. At SIGTERM: PASS unless a
connection failed with an error (a reset: what a migration must never cause).
"""
import os
import signal
import socket
import sys
import threading

result = os.path.abspath(sys.argv[1])
port = int(sys.argv[2])
failures = []
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def serve(conn):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError as e:
        failures.append(f"a connection failed: {e}")
    finally:
        conn.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen(16)


def accept():
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
with open(result + ".ready.tmp", "w") as f:
    f.write(f"READY {os.getpid()}\n")
os.rename(result + ".ready.tmp", result + ".ready")
while not stop.wait(0.1):
    pass
with open(result + ".tmp", "w") as f:
    f.write("PASS\n" if not failures else f"FAIL {failures[0]}\n")
os.rename(result + ".tmp", result)
