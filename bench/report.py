#!/usr/bin/env python3
"""Turns bench/results/*.jsonl into the tables of docs/BENCHMARKS.md (between the
<!-- results:NAME --> markers) and the throughput chart docs/bench-throughput.svg."""
import json
import os
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.environ.get("RESULTS", os.path.join(ROOT, "bench", "results"))
# Only the default results (full runs) go into the docs; a run with RESULTS elsewhere (a
# smoke run) gets its report next to its results.
OFFICIAL = os.path.abspath(RES) == os.path.join(ROOT, "bench", "results")
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")
OUT_DOC = DOC if OFFICIAL else os.path.join(RES, "BENCHMARKS.md")
OUT_SVG = os.path.join(ROOT, "docs", "bench-throughput.svg") if OFFICIAL else os.path.join(RES, "bench-throughput.svg")
OUT_BEFORE_AFTER = os.path.join(ROOT, "docs", "bench-before-after.svg") if OFFICIAL else os.path.join(RES, "bench-before-after.svg")


def load(name):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def broker_table():
    rows = load("broker.jsonl")
    if not rows:
        return "_not run yet_", {}
    groups = {}
    for r in rows:
        res = r.get("result")
        if not res:
            key = (r["broker"], r.get("size"), r.get("acks"))
            groups.setdefault(key, []).append(None)
            continue
        key = (r["broker"], res["size"], res["acks"])
        groups.setdefault(key, []).append(res)
    out = ["| broker | msg size | acks | produce msgs/s | produce MB/s | produce p50 ms | produce p99 ms | consume msgs/s | consume MB/s |",
           "|---|---|---|---|---|---|---|---|---|"]
    medians = {}
    for (broker, size, acks), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        ok = [r for r in rs if r]
        if not ok:
            out.append(f"| {broker} | {size} B | {acks} | failed | | | | | |")
            continue
        col = lambda k: stats([r[k] for r in ok])
        out.append(f"| {broker} | {size} B | {acks}{' (idempotent)' if ok[0]['idempotent'] else ''} | {col('produce_msgs_per_s')} | "
                   f"{col('produce_mb_per_s')} | {col('produce_p50_ms')} | {col('produce_p99_ms')} | {col('consume_msgs_per_s')} | {col('consume_mb_per_s')} |")
        medians[(broker, size, acks)] = {k: statistics.median(r[k] for r in ok)
                                         for k in ("produce_msgs_per_s", "consume_msgs_per_s")}
    # ratios measured in the same run
    ratios = []
    for size in sorted({k[1] for k in medians}):
        for acks in ("all", "1"):
            f = medians.get(("finstream", size, acks))
            m = medians.get(("tansu-memory", size, acks))
            s = medians.get(("tansu-sqlite", size, acks))
            fm = medians.get(("finstream-memory", size, acks))
            fs = medians.get(("finstream-sled", size, acks))
            if f and m:
                mem = f"{fm['produce_msgs_per_s']/m['produce_msgs_per_s']:.2f}x" if fm else "–"
                sled = f"{fs['produce_msgs_per_s']/m['produce_msgs_per_s']:.2f}x" if fs else "–"
                ratios.append(f"| {size} B | {acks} | {f['produce_msgs_per_s']/m['produce_msgs_per_s']:.2f}x | "
                              f"{(f['produce_msgs_per_s']/s['produce_msgs_per_s']) if s else float('nan'):.2f}x | "
                              f"{f['consume_msgs_per_s']/m['consume_msgs_per_s']:.2f}x | {sled} | {mem} |")
    if ratios:
        out += ["", "Ratios, finstream (durable, segment files) over Tansu, medians of the same run (last two"
                " columns: finstream with `--storage-format sled`, the store before segment files, and finstream on"
                " its in-memory store, not durable, each over Tansu memory):", "",
                "| msg size | acks | produce vs Tansu memory | produce vs Tansu sqlite | consume vs Tansu memory | sled-log finstream produce vs Tansu memory | in-memory finstream produce vs Tansu memory |",
                "|---|---|---|---|---|---|---|"] + ratios
    return "\n".join(out), medians


def pipeline_table():
    rows = load("pipeline.jsonl")
    if not rows:
        return "_not run yet_"
    by = {}
    for r in rows:
        by.setdefault(r["run"], []).append(r)
    out = ["| run | rows | rows/s | seconds | peak RSS MiB |", "|---|---|---|---|---|"]
    for run in ("clean-only", "all-in-one", "all-in-one-before", "psql-copy", "all-in-one-5x"):
        rs = by.get(run)
        if not rs:
            continue
        rss = stats([r["peak_rss_kb"] / 1024 for r in rs]) if "peak_rss_kb" in rs[0] else "–"
        name = f"all-in-one, before ({rs[0]['label']})" if run == "all-in-one-before" else run
        out.append(f"| {name} | {rs[0]['rows']:,} | {stats([r['rows_per_s'] for r in rs])} | {stats([r['seconds'] for r in rs])} | {rss} |")
    if "all-in-one" in by and "psql-copy" in by:
        a = statistics.median(r["rows_per_s"] for r in by["all-in-one"])
        c = statistics.median(r["rows_per_s"] for r in by["psql-copy"])
        out += ["", f"all-in-one reaches **{a / c:.0%}** of the `\\copy` limit (medians, same run)."]
        if "all-in-one-before" in by:
            b = statistics.median(r["rows_per_s"] for r in by["all-in-one-before"])
            out[-1] += f" Before ({by['all-in-one-before'][0]['label']}), in the same run: {b / c:.0%}."
    if "all-in-one" in by and "all-in-one-5x" in by:
        r1 = statistics.median(r["peak_rss_kb"] for r in by["all-in-one"])
        r5 = statistics.median(r["peak_rss_kb"] for r in by["all-in-one-5x"])
        out.append(f"Peak RSS at 5x the rows is **{r5 / r1:.2f}x** the 1x figure ({r1/1024:.0f} → {r5/1024:.0f} MiB, medians).")
    return "\n".join(out)


def latency_table():
    rows = load("latency.jsonl")
    if not rows:
        return "_not run yet_"
    rs = [r["result"] for r in rows]
    return "\n".join([
        "| rate msgs/s | seconds | arrived/sent | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|",
        f"| {rs[0]['rate']} | {rs[0]['seconds']} | {sum(r['arrived'] for r in rs)}/{sum(r['sent'] for r in rs)} | "
        f"{stats([r['p50_ms'] for r in rs])} | {stats([r['p99_ms'] for r in rs])} | {stats([r['max_ms'] for r in rs])} |"])


def broker_cpu_table():
    rows = load("broker_cpu.jsonl")
    if not rows:
        return "_not run yet_"
    n = rows[0]["messages"]
    out = [f"{n:,} × 100 B produced (acks=all, idempotent) and consumed, {len(rows) // 2} reps each", "",
           "| broker | broker CPU-s (user + system) | produce msgs/s | consume msgs/s |", "|---|---|---|---|"]
    med = {}
    for kind in ("finstream", "tansu-memory"):
        rs = [r for r in rows if r["broker"] == kind]
        if rs:
            med[kind] = statistics.median(r["cpu_s"] for r in rs)
            out.append(f"| {kind} | {stats([r['cpu_s'] for r in rs])} | {stats([r['result']['produce_msgs_per_s'] for r in rs])} | "
                       f"{stats([r['result']['consume_msgs_per_s'] for r in rs])} |")
    if len(med) == 2 and med["tansu-memory"] > 0:
        out += ["", f"finstream's broker CPU is **{med['finstream'] / med['tansu-memory']:.2f}x** Tansu memory's (medians, same run)."]
    return "\n".join(out)


def e2e_table():
    rows = load("e2e.jsonl")
    if not rows:
        return "_not run yet_"
    out = ["| background load msgs/s | rate msgs/s | seconds | received/sent | p50 ms | p99 ms | p99.9 ms | max ms |",
           "|---|---|---|---|---|---|---|---|"]
    for load_rate in sorted({r["result"]["load_rate"] for r in rows}):
        rs = [r["result"] for r in rows if r["result"]["load_rate"] == load_rate]
        k = lambda key: stats([r[key] for r in rs])
        out.append(f"| {load_rate:,} | {rs[0]['rate']} | {rs[0]['seconds']} | {sum(r['received'] for r in rs)}/{sum(r['sent'] for r in rs)} | "
                   f"{k('p50_ms')} | {k('p99_ms')} | {k('p999_ms')} | {k('max_ms')} |")
    return "\n".join(out)


def txn_table():
    rows = load("txn.jsonl")
    if not rows:
        return "_not run yet_"
    sizes = sorted({r["result"]["txn_messages"] for r in rows})
    first = rows[0]["result"]
    out = [
        f"{rows[0].get('date', '')}: {first['messages']:,} × {first['size']} B, acks=all, {len(rows) // len(sizes)} reps per size",
        "",
        "| messages per transaction | idempotent msgs/s | transactional msgs/s | transactional / idempotent | commit p50 ms | commit p99 ms | read_uncommitted msgs/s | read_committed msgs/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        rs = [r["result"] for r in rows if r["result"]["txn_messages"] == size]
        k = lambda key: stats([r[key] for r in rs])
        out.append(
            f"| {size:,} | {k('idempotent_msgs_per_sec')} | {k('transactional_msgs_per_sec')} | {k('transactional_vs_idempotent')} | "
            f"{k('commit_p50_ms')} | {k('commit_p99_ms')} | {k('read_uncommitted_msgs_per_sec')} | {k('read_committed_msgs_per_sec')} |")
    return "\n".join(out)


def footprint_table():
    rows = load("footprint.jsonl")
    if not rows:
        return "_not run yet_"
    starts = [r for r in rows if "ready_ms" in r]
    build = next((r for r in rows if "binary_bytes" in r), {})
    out = ["| measure | value |", "|---|---|"]
    if starts:
        out.append(f"| broker start → first ApiVersions answer (empty directory) | {stats([r['ready_ms'] for r in starts])} ms |")
        out.append(f"| broker idle RSS | {stats([r['idle_rss_kb'] / 1024 for r in starts])} MiB |")
    if build:
        out.append(f"| release binary | {build['binary_bytes'] / 2**20:.1f} MiB ({build['stripped_bytes'] / 2**20:.1f} MiB stripped) |")
        cold = build.get("cold_build_s")
        out.append(f"| cold release build | {cold} s |" if cold is not None else "| cold release build | not measured |")
        out.append(f"| warm release build (touch src/main.rs) | {build['warm_build_s']} s |")
    return "\n".join(out)


def cpu_budget_table():
    rows = load("cpu_budget.jsonl")
    if not rows:
        return "_not run yet_"
    per_m = 1_000_000 / rows[0]["rows"]
    stages = {r["stage"] for r in rows}
    med = lambda st: statistics.median([r["cpu_s"] for r in rows if r["stage"] == st])
    col = lambda st, key="cpu_s": stats([r[key] * per_m for r in rows if r["stage"] == st])
    split = [st for st in ("read + clean", "producer client (librdkafka)", "broker ingest", "fetch (librdkafka consumer)",
                           "decode + COPY encoding (ours)", "broker fetch", "PostgreSQL (load)") if st in stages]
    total = sum(med(st) for st in split)
    out = ["| stage | CPU-s per 1M rows | share |", "|---|---|---|"]
    out += [f"| {st} | {col(st)} | {med(st) / total:.0%} |" for st in split]
    out.append(f"| **sum of the stages** | {total * per_m:.2f} | 100% |")
    out += ["", "| run | our CPU-s | PostgreSQL CPU-s | wall s |", "|---|---|---|---|"]
    aio, aio_pg = "all-in-one process", "all-in-one PostgreSQL"
    if aio in stages:
        out.append(f"| all-in-one | {col(aio)} | {col(aio_pg)} | {col(aio, 'wall_s')} |")
    copy_pg, copy_client = "psql \\copy PostgreSQL", "psql \\copy client"
    if copy_pg in stages:
        out.append(f"| psql \\\\copy of the cleaned rows | {col(copy_client)} (psql) | {col(copy_pg)} | {col(copy_pg, 'wall_s')} |")
    return "\n".join(out)


def instructions_table():
    rows = load("instructions.jsonl")
    if not rows:
        return "_not run yet_"
    out = ["| request | instructions (callgrind) |", "|---|---|"]
    out.append(f"| Produce (acks=-1, one batch of 100 × 100 B, durable store) | {stats([r['produce_instructions'] for r in rows])} |")
    out.append(f"| Fetch (one batch of 100 × 100 B) | {stats([r['fetch_instructions'] for r in rows])} |")
    out.append(f"| runs | {len(rows)}, {rows[-1]['date']} |")
    return "\n".join(out)


def cold_start_table():
    rows = load("cold_start.jsonl")
    if not rows:
        return "_not run yet_"
    out = [f"Log: {rows[0]['log_bytes'] / 1e9:.1f} GB in {rows[0]['segments']} segments, one partition.", "",
           "| recovery | page cache | TCP connect accepted | first ApiVersions answer (ready) |", "|---|---|---|---|"]
    labels = {"scan": "every batch header walked (summaries removed)", "summaries": "closed segments from their summaries"}
    for recovery in ("scan", "summaries"):
        for cache in ("cold", "warm"):
            # rows before both paths were measured are scans
            rs = [r for r in rows if r.get("recovery", "scan") == recovery and r["cache"] == cache]
            if rs:
                out.append(f"| {labels[recovery]} | {cache} | {stats([r['tcp_accept_ms'] for r in rs])} ms | {stats([r['ready_ms'] for r in rs])} ms |")
    return "\n".join(out)


def fixture_table():
    rows = load("fixture.jsonl")
    if not rows:
        return "_not run yet_"
    k = lambda key, f=1: stats([r[key] / f for r in rows])
    return "\n".join([
        "| measure | value |", "|---|---|",
        f"| `EmbeddedKafka::start()` (port 0, temporary directory) | {k('start_ms')} ms |",
        f"| start → topic created → one message produced (librdkafka) and read back | {k('first_message_ms')} ms |",
        f"| drop (shutdown, directory removed) | {k('drop_ms')} ms |",
        f"| test process RSS, first start (broker + one librdkafka producer) | {rows[0]['rss_kb'] / 1024:.1f} MiB |",
        f"| test process RSS after {len(rows)} starts and drops | {rows[-1]['rss_kb'] / 1024:.1f} MiB (glibc's per-thread arenas keep freed memory; threads and files return to the baseline) |",
        f"| repetitions | {len(rows)} |",
    ])


def svg(medians):
    if not medians:
        return
    bars = [(f"{b} {s}B acks={a}", v["produce_msgs_per_s"], v["consume_msgs_per_s"]) for (b, s, a), v in sorted(medians.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))]
    top = max(max(p, c) for _, p, c in bars)
    w, row = 760, 34
    h = 40 + row * len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             '<text x="10" y="16" font-size="13">Broker throughput, msgs/s (median): produce (dark), consume (light)</text>']
    for i, (label, p, c) in enumerate(bars):
        y = 30 + i * row
        parts.append(f'<text x="10" y="{y + 14}">{label}</text>')
        for j, (v, color) in enumerate(((p, "#2b6cb0"), (c, "#90cdf4"))):
            bw = int((w - 260) * v / top)
            parts.append(f'<rect x="240" y="{y + j * 13}" width="{bw}" height="12" fill="{color}"/>')
            parts.append(f'<text x="{245 + bw}" y="{y + 10 + j * 13}">{v:,.0f}</text>')
    parts.append("</svg>")
    with open(OUT_SVG, "w") as f:
        f.write("\n".join(parts) + "\n")


def before_after_pairs():
    """(what, unit, before, after, goal, lower is better) for each goal measured both ways
    in one run: cold start (summaries removed vs used) and the pipeline (a BASELINE build)."""
    pairs = []
    cold = load("cold_start.jsonl")
    for cache in ("cold", "warm"):
        side = lambda rec: [r["ready_ms"] for r in cold if r.get("recovery") == rec and r["cache"] == cache]
        if side("scan") and side("summaries"):
            pairs.append((f"Cold start, 10 GB log, {cache} page cache: ready", "ms",
                          statistics.median(side("scan")), statistics.median(side("summaries")), 1000 if cache == "cold" else None, True))
    by = {}
    for r in load("pipeline.jsonl"):
        by.setdefault(r["run"], []).append(r["rows_per_s"])
    if all(k in by for k in ("all-in-one", "all-in-one-before", "psql-copy")):
        c = statistics.median(by["psql-copy"])
        pairs.append(("Pipeline: all-in-one as a share of psql \\copy", "%",
                      100 * statistics.median(by["all-in-one-before"]) / c, 100 * statistics.median(by["all-in-one"]) / c, 75, False))
    return pairs


def before_after_svg():
    pairs = before_after_pairs()
    if not pairs:
        return
    w, row = 760, 58
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{40 + row * len(pairs)}" font-family="sans-serif" font-size="11">',
             '<text x="10" y="16" font-size="13">Issue 20, before (grey) and after (blue), medians of one run; the red line is the goal</text>']
    for i, (what, unit, before, after, goal, lower) in enumerate(pairs):
        y = 30 + i * row
        top = max(before, after, goal or 0)
        better = "lower is better" if lower else "higher is better"
        parts.append(f'<text x="10" y="{y + 12}">{what} ({unit}, {better})</text>')
        for j, (v, color) in enumerate(((before, "#a0aec0"), (after, "#2b6cb0"))):
            bw = max(1, int((w - 140) * v / top))
            parts.append(f'<rect x="10" y="{y + 18 + j * 15}" width="{bw}" height="13" fill="{color}"/>')
            parts.append(f'<text x="{15 + bw}" y="{y + 29 + j * 15}">{v:,.0f} {unit}</text>')
        if goal:
            gx = 10 + int((w - 140) * goal / top)
            parts.append(f'<line x1="{gx}" y1="{y + 15}" x2="{gx}" y2="{y + 50}" stroke="#e53e3e" stroke-width="2"/>')
    parts.append("</svg>")
    with open(OUT_BEFORE_AFTER, "w") as f:
        f.write("\n".join(parts) + "\n")


def replace(doc, name, body):
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    if start not in doc:
        return doc
    a = doc.index(start) + len(start)
    b = doc.index(end)
    return doc[:a] + "\n" + body + "\n" + doc[b:]


def main():
    doc = open(DOC).read()
    broker, medians = broker_table()
    doc = replace(doc, "broker", broker)
    doc = replace(doc, "pipeline", pipeline_table())
    doc = replace(doc, "latency", latency_table())
    doc = replace(doc, "e2e", e2e_table())
    doc = replace(doc, "broker_cpu", broker_cpu_table())
    doc = replace(doc, "footprint", footprint_table())
    doc = replace(doc, "fixture", fixture_table())
    doc = replace(doc, "cpu_budget", cpu_budget_table())
    doc = replace(doc, "instructions", instructions_table())
    doc = replace(doc, "cold_start", cold_start_table())
    doc = replace(doc, "txn", txn_table())
    machine = os.path.join(RES, "machine.json")
    if os.path.exists(machine):
        m = json.load(open(machine))
        doc = replace(doc, "machine", f"{m['date']} · {m['cores']} cores · {m['cpu']} · Linux {m['kernel']} · {m['rustc']}")
    open(OUT_DOC, "w").write(doc)
    svg(medians)
    before_after_svg()
    if not OFFICIAL:
        print(f"report written to {OUT_DOC} (docs/ is only updated from bench/results)")


if __name__ == "__main__":
    main()
