#!/usr/bin/env python3
"""peers_report.py RESULTS.tsv - the tables of bench/peers.sh.

Reads the per-run rows bench/peers.sh writes (run, system, endpoint, rps,
p50_ms, p99_ms, ...) and prints, as Markdown: every run, then the median
over runs per endpoint and system with chronicle's ratio to each peer, and
the issue's goals (chronicle >= 3x the better peer on submit-update, >= 2x
on reads, p99 <= 10 ms)."""
import csv
import statistics
import sys

ENDPOINTS = [
    ("submit", "POST /commands/submit-update", 3.0),
    ("team", "GET /api/teams/{id}", 2.0),
    ("updates", "GET /api/updates?limit=50", 2.0),
]


def main(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    systems = []
    for r in rows:
        if r["system"] not in systems:
            systems.append(r["system"])
    peers = [s for s in systems if not s.startswith("chronicle")]
    runs = sorted({int(r["run"]) for r in rows})

    def cell(run, system, endpoint):
        for r in rows:
            if int(r["run"]) == run and r["system"] == system and r["endpoint"] == endpoint:
                return r
        return None

    print("Every run (requests/s, p99 ms; load average before the system's run):")
    print()
    print("| run | system | load | " + " | ".join(name for _, name, _ in ENDPOINTS) + " |")
    print("|---|---|---|" + "---|" * len(ENDPOINTS))
    for run in runs:
        for s in systems:
            cells = [cell(run, s, e) for e, _, _ in ENDPOINTS]
            if not any(cells):
                continue
            load = next(c for c in cells if c)["loadavg_before"]
            text = [f"{float(c['rps']):,.0f} ({float(c['p99_ms']):.1f})" if c else "-" for c in cells]
            print(f"| {run} | {s} | {load} | " + " | ".join(text) + " |")
    print()

    med = {}
    for s in systems:
        for e, _, _ in ENDPOINTS:
            rs = [r for r in rows if r["system"] == s and r["endpoint"] == e]
            if rs:
                med[s, e] = (statistics.median(float(r["rps"]) for r in rs),
                             statistics.median(float(r["p99_ms"]) for r in rs), len(rs))
    print(f"Median over {len(runs)} run(s): requests/s (p99 ms), chronicle's ratio of requests/s:")
    print()
    head = "| endpoint | " + " | ".join(systems) + " | " + " | ".join(f"chronicle / {p}" for p in peers)
    print(head + " |")
    print("|---|" + "---|" * (len(systems) + len(peers)))
    goals = []
    for e, name, want in ENDPOINTS:
        text = [f"{med[s, e][0]:,.0f} ({med[s, e][1]:.1f})" if (s, e) in med else "-" for s in systems]
        ratios = []
        for p in peers:
            if ("chronicle", e) in med and (p, e) in med and med[p, e][0] > 0:
                ratios.append(f"{med['chronicle', e][0] / med[p, e][0]:.2f}x")
            else:
                ratios.append("-")
        print(f"| {name} | " + " | ".join(text) + " | " + " | ".join(ratios) + " |")
        if ("chronicle", e) in med and any((p, e) in med for p in peers):
            best = max(med[p, e][0] for p in peers if (p, e) in med)
            ratio = med["chronicle", e][0] / best if best > 0 else float("inf")
            goals.append(f"{name}: chronicle {ratio:.2f}x the better peer (goal >= {want:g}x): "
                          + ("met" if ratio >= want else "NOT met"))
        if ("chronicle", e) in med:
            p99 = med["chronicle", e][1]
            goals.append(f"{name}: chronicle p99 {p99:.1f} ms (goal <= 10 ms): "
                         + ("met" if p99 <= 10 else "NOT met"))
    print()
    for g in goals:
        print("- " + g)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: peers_report.py RESULTS.tsv")
    main(sys.argv[1])
