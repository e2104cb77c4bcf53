#!/usr/bin/env python3
"""Starts `finstream broker` and times it: to the first accepted TCP connection and to its
first ApiVersions answer (ready; the listener is bound before the logs are recovered).

usage: broker_start.py FINSTREAM DATA_DIR [--idle-rss] [--kill]
Prints one JSON object: tcp_accept_ms, ready_ms (and idle_rss_kb after 3 s with --idle-rss).
The broker is stopped with SIGTERM, or SIGKILL with --kill.
"""
import json
import socket
import struct
import subprocess
import sys
import time


def answered(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    body = struct.pack(">hhih", 18, 0, 1, -1)  # ApiVersions v0, correlation id 1, no client id
    c.sendall(struct.pack(">i", len(body)) + body)
    ok = len(c.recv(8)) >= 8
    c.close()
    return ok


def main():
    binary, data = sys.argv[1], sys.argv[2]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "broker", "--listen", f"127.0.0.1:{port}", "--http", "off", "--data-dir", data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    accepted = None
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            accepted = accepted or time.perf_counter() - t0
            if answered(port):
                break
        except OSError:
            time.sleep(0.0005)
    out = {"tcp_accept_ms": round(accepted * 1000, 1), "ready_ms": round((time.perf_counter() - t0) * 1000, 1)}
    if "--idle-rss" in sys.argv:
        time.sleep(3)
        with open(f"/proc/{p.pid}/status") as f:
            out["idle_rss_kb"] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    if "--kill" in sys.argv:
        p.kill()
    else:
        p.terminate()
    p.wait()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
