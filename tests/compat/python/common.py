"""Shared checks for the client scenarios (see docs/COMPATIBILITY.md)."""
import sys
import time

N = 5000
PARTITIONS = 3


def step(client, name):
    print(f"PASS {client}: {name}", flush=True)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def expect_values(got, n, start=0, what="messages"):
    want = {f"value-{i}" for i in range(start, start + n)}
    check(len(got) == n, f"{what}: got {len(got)} records, want {n}")
    check(set(got) == want, f"{what}: wrong or duplicated values")


def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    fail(f"timed out after {timeout}s waiting for {what}")
