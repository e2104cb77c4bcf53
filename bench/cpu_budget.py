#!/usr/bin/env python3
"""CPU budget of the pipeline: CPU-seconds per stage for ROWS rows, from /proc accounting.

Each stage runs as its own process so its CPU is its own (utime + stime of the process,
threads included, from /proc/<pid>/stat; PostgreSQL's is the sum over every `postgres`
process: the backend, WAL writer, checkpointer...):
  read + clean        produce --dry-run
  producer client     produce into a `finstream broker`, minus read + clean
  broker ingest       the broker's CPU while it is produced to
  fetch (librdkafka)  consume --stop-at-end: its rdk:* threads
  decode + COPY       consume --stop-at-end: every other thread (ours)
  broker fetch        the broker's CPU while it is consumed from
  PostgreSQL          every postgres process while the consumer loads
Then all-in-one (one process, everything) and psql \\copy of the same cleaned rows, each
with PostgreSQL's CPU beside. One JSON line per measure and repetition on stdout.

usage: cpu_budget.py FINSTREAM CSV PGURL_ADMIN ROWS REPS WORKDIR
"""
import json
import os
import socket
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(path, children=False):
    """utime + stime (and with `children`, the time of waited-for children) from a
    /proc stat file, in seconds."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15 if children else 13]) / TICK


def proc_cpu(pid):
    """CPU of a process (its threads included, exited ones too), in seconds."""
    return stat_cpu(f"/proc/{pid}/stat")


def postgres_cpu():
    """CPU of every postgres process, plus what ended backends used (the postmaster reaps
    them: their CPU is its children's time)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += stat_cpu(f"/proc/{pid}/stat", children=True)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def threads(pid):
    """{tid: (comm, cpu seconds)} of a live process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            out[tid] = (comm, stat_cpu(f"/proc/{pid}/task/{tid}/stat"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def run_cpu(cmd, per_thread=False):
    """Runs cmd to the end; returns (its CPU seconds from wait4's rusage, threads included;
    {"rdk" | "ours": CPU of its threads by name, last seen}, wall seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = {}
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if per_thread:
            try:
                last.update(threads(p.pid))
            except (FileNotFoundError, ProcessLookupError):
                pass
        time.sleep(0.02)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[1]} failed: {p.stderr.read().decode()[-2000:]}")
    groups = {}
    for comm, cpu in last.values():
        key = "rdk" if comm.startswith("rdk:") else "ours"
        groups[key] = groups.get(key, 0.0) + cpu
    return ru.ru_utime + ru.ru_stime, groups, wall


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def psql(url, *args):
    subprocess.run(["psql", url, "-qtA", *args], check=True, stdout=subprocess.PIPE)


def main():
    fin, csv, admin, rows, reps, work = sys.argv[1:7]
    rows, reps = int(rows), int(reps)
    db = f"fs_cpu_{os.getpid()}"
    url = admin.rsplit("/", 1)[0] + "/" + db
    psql(admin, "-c", f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}")
    scaler = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "scaler.json")
    emit = lambda rep, stage, cpu, **kw: print(json.dumps({"rep": rep, "rows": rows, "stage": stage, "cpu_s": round(cpu, 3), **kw}), flush=True)
    drop_tables = "DROP TABLE IF EXISTS transactions, finstream_offsets, finstream_dead_letters, finstream_gaps, finstream_schema_migrations"
    try:
        for rep in range(1, reps + 1):
            clean, _, _ = run_cpu([fin, "produce", "--dry-run", "--csv", csv, "--scaler", scaler])
            emit(rep, "read + clean", clean)

            port, data = free_port(), os.path.join(work, f"broker-{rep}")
            broker = subprocess.Popen([fin, "broker", "--listen", f"127.0.0.1:{port}", "--http", "off", "--data-dir", data],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                    break
                except OSError:
                    time.sleep(0.01)
            bs = f"127.0.0.1:{port}"
            b0 = proc_cpu(broker.pid)
            produced, _, _ = run_cpu([fin, "produce", "--bootstrap-servers", bs, "--topic", "budget", "--csv", csv, "--scaler", scaler])
            b1 = proc_cpu(broker.pid)
            emit(rep, "producer client (librdkafka)", produced - clean)
            emit(rep, "broker ingest", b1 - b0)

            psql(url, "-c", drop_tables)
            pg0 = postgres_cpu()
            consumed, groups, _ = run_cpu([fin, "consume", "--bootstrap-servers", bs, "--topic", "budget", "--group", "budget",
                                           "--database-url", url, "--stop-at-end"], per_thread=True)
            pg1, b2 = postgres_cpu(), proc_cpu(broker.pid)
            emit(rep, "fetch (librdkafka consumer)", groups.get("rdk", 0.0))
            emit(rep, "decode + COPY encoding (ours)", consumed - groups.get("rdk", 0.0))
            emit(rep, "broker fetch", b2 - b1)
            emit(rep, "PostgreSQL (load)", pg1 - pg0)
            broker.terminate()
            broker.wait()

            psql(url, "-c", drop_tables)
            pg0 = postgres_cpu()
            aio, _, wall = run_cpu([fin, "all-in-one", "--csv", csv, "--database-url", url, "--scaler", scaler,
                                    "--data-dir", os.path.join(work, f"aio-{rep}"), "--http", "off"])
            pg1 = postgres_cpu()
            emit(rep, "all-in-one process", aio, wall_s=round(wall, 3))
            emit(rep, "all-in-one PostgreSQL", pg1 - pg0)

            clean_csv = os.path.join(work, "clean.csv")
            psql(url, "-c", f"\\copy transactions (amount, description) TO '{clean_csv}' WITH (FORMAT csv)")
            psql(url, "-c", "TRUNCATE transactions")
            pg0, t0 = postgres_cpu(), time.monotonic()
            copy_cpu, _, wall = run_cpu(["psql", url, "-qc", f"\\copy transactions (amount, description) FROM '{clean_csv}' WITH (FORMAT csv)"])
            pg1 = postgres_cpu()
            emit(rep, "psql \\copy PostgreSQL", pg1 - pg0, wall_s=round(wall, 3))
            emit(rep, "psql \\copy client", copy_cpu)
    finally:
        psql(admin, "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
