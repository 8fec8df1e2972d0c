#!/usr/bin/env python3
"""Turn benchmark rows into one table of ratios to qshm, and write bench/RESULTS.md.

usage: report.py ROWS.tsv RESULTS.md
"""
import datetime
import os
import platform
import subprocess
import sys
from collections import OrderedDict

# metric: (title, reference implementation, lower is better)
METRICS = OrderedDict([
    ("lock_unlock_ns", ("uncontended lock+unlock pair", "qshm fast", True)),
    ("cycle_4KiB_us", ("create+attach+detach+destroy, 4 KiB", "qshm POSIX (fast)", True)),
    ("cycle_64MiB_us", ("create+attach+detach+destroy, 64 MiB", "qshm POSIX (fast)", True)),
    ("handoff_median_us", ("cross-process handoff, median", "qshm fast", True)),
    ("handoff_p99_us", ("cross-process handoff, p99", "qshm fast", True)),
    ("contended_2p_Mops", ("2 processes incrementing under the lock", "qshm fast", False)),
    ("contended_4p_Mops", ("4 processes incrementing under the lock", "qshm fast", False)),
])


def read_rows(path):
    rows = OrderedDict()
    skips = []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("#"):
            skips.append(line.lstrip("# "))
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        metric, impl, value, unit = parts
        rows.setdefault(metric, []).append((impl, float(value), unit))
    return rows, skips


def machine():
    def cmd(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"CPU: {cpu}, {os.cpu_count()} cores",
        f"kernel: {platform.release()}",
        f"rustc: {cmd('rustc', '--version')}",
        f"python: {platform.python_version()}",
    ]


def fmt(v):
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def main():
    rows, skips = read_rows(sys.argv[1])
    lines = ["| measurement | implementation | value | x qshm |", "|---|---|---:|---:|"]
    for metric, entries in rows.items():
        title, ref_name, lower = METRICS.get(metric, (metric, None, True))
        if metric.startswith("copy_"):
            title, ref_name, lower = (f"copy {metric.split('_')[1]} into memory", "qshm segment", False)
        ref = next((v for i, v, _ in entries if i == ref_name), entries[0][1])
        better = "lower is better" if lower else "higher is better"
        for n, (impl, value, unit) in enumerate(entries):
            name = f"{title} ({unit}, {better})" if n == 0 else ""
            lines.append(f"| {name} | {impl} | {fmt(value)} | {value / ref:.2f} |")

    def get(metric, impl):
        return next((v for i, v, _ in rows.get(metric, []) if i == impl), None)

    targets = []
    fast = get("lock_unlock_ns", "qshm fast")
    if fast:
        targets.append(f"uncontended fast lock+unlock {fast:.1f} ns (target <= 25 ns): "
                       + ("met" if fast <= 25 else f"missed by {fast - 25:.1f} ns"))
        sysv = get("lock_unlock_ns", "qshm Qt-compatible (System V)")
        if sysv:
            targets.append(f"fast vs the System V semaphore Qt's lock uses, both from Rust: {sysv / fast:.0f}x "
                           "(target >= 20x): " + ("met" if sysv / fast >= 20 else "missed"))
        qt = get("lock_unlock_ns", "Qt 6 QSharedMemory lock (PyQt6, System V)")
        if qt:
            targets.append(f"fast vs Qt 6's QSharedMemory::lock()+unlock() through PyQt6: {qt / fast:.0f}x "
                           "(includes Python call overhead, see the interpreter baseline row)")
    handoff = get("handoff_median_us", "qshm fast")
    if handoff:
        targets.append(f"handoff median {handoff:.2f} us (target <= 2 us): "
                       + ("met" if handoff <= 2 else f"missed by {handoff - 2:.2f} us"))
    copy = next((m for m in rows if m.startswith("copy_")), None)
    if copy:
        seg = get(copy, "qshm segment")
        mem = get(copy, "memcpy to private memory")
        if seg and mem:
            targets.append(f"copy bandwidth {seg:.1f} GB/s = {100 * seg / mem:.0f}% of memcpy {mem:.1f} GB/s "
                           "(target >= 90%): " + ("met" if seg >= 0.9 * mem else "missed"))

    table = "\n".join(lines)
    print(table)
    print()
    for t in targets:
        print("target:", t)
    for s in skips:
        print("skipped:", s)

    out = ["# qshm benchmark results", "",
           "Produced by `bench/compare.sh`: every figure is a median over repeated runs, all measured",
           "in the same run on the same machine. `x qshm` is value / the qshm reference row of the",
           "measurement (first qshm row); read it with the better-direction in the first column.", "",
           "## Machine", ""] + [f"- {m}" for m in machine()] + ["", "## Figures", "", table, "",
                                                                "## Targets", ""] + [f"- {t}" for t in targets]
    if skips:
        out += ["", "## Skipped", ""] + [f"- {s}" for s in skips]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
