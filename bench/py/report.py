#!/usr/bin/env python3
"""Turn benchmark rows into tables, SVG charts and the target list; write bench/RESULTS.md.

usage: report.py ROWS.tsv RESULTS.md [--quick] [--seconds N]

Rows are `metric  implementation  x  median  min  max  unit` (x empty for single
figures). Charts go to charts/ next to RESULTS.md, drawn with matplotlib, or with the
small SVG writer at the end of this file when matplotlib is missing.
The targets of the performance issue are the TARGETS table below: edit them there.
"""
import datetime
import math
import os
import platform
import subprocess
import sys
from collections import OrderedDict

RAW = "shared_memory + raw_sync mutex"
SHMEM = "shared_memory crate"
SPIN = "floor: CAS spin lock on a MAP_SHARED word"
CAS = "floor: CAS acquire + release store on a MAP_SHARED word"
SEM_POSIX = "bare sem_wait + sem_post (qshm's POSIX Qt semaphore)"
SEM_SYSV = "bare semop -1 / +1 with SEM_UNDO (qshm's System V Qt semaphore)"
RAW_POSIX = "floor: raw shm_open + mmap (POSIX)"
RAW_SYSV = "floor: raw shmget + shmat (System V)"
EVENTFD = "eventfd ping-pong (write -> blocking read)"
FUTEX = "floor: bare FUTEX_WAKE -> FUTEX_WAIT on a MAP_SHARED word"
QT_BASELINE = "Python: the Qt cycle's calls as no-ops (interpreter baseline)"
# issue 23: frame channels and message queues (bench/src/frames.rs, bench/src/queue.rs)
FRAMES_QSHM = "qshm FrameWriter -> FrameReader::read_next"
FRAMES_PIPE = "pipe per reader (every frame to every reader)"
FRAMES_SOCKET = "Unix stream socket per reader (every frame to every reader)"
FRAMES_ICEORYX2 = "iceoryx2 publish-subscribe (safe overflow, subscriber copies out)"
FRAMES_MEMCPY = "floor: memcpy of 4 MiB frames into 3 buffers in turn, one process"
QUEUE_QSHM = "qshm Producer -> Consumer"
QUEUE_PIPE = "pipe (one write and one read per message)"
QUEUE_SOCKET = "Unix stream socket (one send and one receive per message)"
QUEUE_FLOOR = "floor: two atomics on a shared word (store, then load; spin, yield every 100)"
# issue 23: async wake-ups (bench/src/notify.rs) and removal checks (bench/src/removal.rs)
NOTIFY_SYNC = "qshm notify_all -> wait_for_change (Fast, POSIX)"
NOTIFY_ASYNC = "qshm notify_all -> changed().await on tokio (Fast, POSIX)"
REMOVED_POSIX = "qshm is_removed() (Fast, POSIX)"
LSTAT = "floor: lstat of the segment's /dev/shm name"
SHMCTL = "floor: shmctl(IPC_STAT) of the segment's id"
IDLE = 1000  # idle processes of the crowded-machine cycle (qshm-bench's Plan)

# metric: title, lower is better, peer row, floor row, and floors by implementation
# (first substring match wins). Ratios in the tables are cost ratios: above 1 = slower.
METRICS = OrderedDict([
    ("lock_unlock_ns", dict(title="uncontended lock+unlock pair", lower=True, peer=RAW, floor=CAS,
                            floors=[("Python", None), ("POSIX)", SEM_POSIX), ("System V)", SEM_SYSV)])),
    ("fence_us", dict(title="an asymmetric fence: what a lock released by a plain store would make each "
                            "sleeping waiter pay (see the README's benchmark notes)",
                      lower=True, peer=None, floor="floor: getppid (a system call that does nothing)", floors=[])),
    ("cycle_4KiB_us", dict(title="create + attach + detach + destroy, 4 KiB", lower=True, peer=SHMEM,
                           floor=RAW_POSIX, floors=[("interpreter baseline", None), ("System V", RAW_SYSV)])),
    ("crowded_cycle_4KiB_us", dict(title=f"the same cycle, before and while {IDLE} idle processes run",
                                   lower=True, peer=None, floor=None, floors=[])),
    ("handoff_median_us", dict(title="two processes taking turns under the lock: one-way handoff, median",
                               lower=True, peer=RAW, floor=SPIN, floors=[])),
    ("handoff_p99_us", dict(title="two processes taking turns under the lock: one-way handoff, p99",
                            lower=True, peer=RAW, floor=SPIN, floors=[])),
    ("notify_wake_median_us", dict(title="two processes: notify_all in one -> wait_for_change returns in the other, "
                                         "one way (half a round trip), median",
                                   lower=True, peer=EVENTFD, floor=FUTEX, floors=[])),
    ("notify_wake_p99_us", dict(title="two processes: notify_all in one -> wait_for_change returns in the other, "
                                      "one way (half a round trip), p99",
                                lower=True, peer=EVENTFD, floor=FUTEX, floors=[])),
    ("removal_check_ns", dict(title="is_removed(): was the attached segment removed behind the handle's back "
                                    "(qshm also looks at its lock state: two lookups)",
                              lower=True, peer=None, floor=None, floors=[("POSIX", LSTAT), ("System V", SHMCTL)])),
    ("racers_kcycles_per_s", dict(title="N processes racing on one key: create or attach, lock, add, unlock, detach",
                                  lower=False, peer=None, floor=None, floors=[], xlabel="processes",
                                  chart="racers.svg", ylabel="thousand cycles per second, all racers")),
    ("open_or_create_us", dict(title="open_or_create, 4 KiB: the call that creates (nobody has the key) and the one "
                                     "that attaches (another process holds the segment), beside create and attach alone",
                               lower=True, peer=None, floor=None,
                               floors=[(f"{fl}: open_or_create, {how}", f"{fl}: {alone} alone")
                                       for fl in ("qshm POSIX (fast)", "qshm POSIX (Qt-compatible)",
                                                  "qshm System V (fast)", "qshm System V (Qt-compatible)")
                                       for how, alone in (("creates", "create"), ("attaches", "attach"))])),
    ("size_cycle_us", dict(title="create + first touch of every page + destroy, against segment size",
                           lower=True, peer=SHMEM, floor=RAW_POSIX, floors=[("System V", RAW_SYSV)],
                           xlabel="segment size", chart="size_cycle.svg", ylabel="µs per cycle")),
    ("contended_Mops", dict(title="N processes incrementing a counter under the lock: throughput",
                            lower=False, peer=RAW, floor=SPIN, floors=[], xlabel="processes",
                            chart="contended_throughput.svg", ylabel="million lock+unlock per second")),
    ("contended_handoff_p50_us", dict(title="N processes under the lock: handoff to another process, median",
                                      lower=True, peer=RAW, floor=SPIN, floors=[], xlabel="processes",
                                      chart="contended_handoff_p50.svg", ylabel="µs, unlock to next lock")),
    ("contended_handoff_p99_us", dict(title="N processes under the lock: handoff to another process, p99",
                                      lower=True, peer=RAW, floor=SPIN, floors=[], xlabel="processes",
                                      chart="contended_handoff_p99.svg", ylabel="µs, unlock to next lock")),
    ("frames_reader_fps", dict(title="4 MiB frames from one writer to N reader processes: frames per second per reader",
                               lower=False, peer=FRAMES_PIPE, floor=FRAMES_MEMCPY, floors=[], xlabel="reader processes",
                               chart="frames_fps.svg", ylabel="frames per second, per reader")),
    ("frames_copy_GBps", dict(title="4 MiB frames to N reader processes: bytes all readers copied per second",
                              lower=False, peer=FRAMES_PIPE, floor=FRAMES_MEMCPY, floors=[], xlabel="reader processes",
                              chart="frames_copy.svg", ylabel="GB/s, all readers")),
    ("frames_writer_fps", dict(title="4 MiB frames to N reader processes: frames the writer published per second",
                               lower=False, peer=FRAMES_PIPE, floor=None, floors=[], xlabel="reader processes")),
    ("queue_Mmsgs", dict(title="64-byte messages from one process to another: throughput", lower=False,
                         peer=QUEUE_PIPE, floor=QUEUE_FLOOR, floors=[])),
    ("queue_latency_median_us", dict(title="64-byte messages, ping-pong: one way (half a round trip), median",
                                     lower=True, peer=QUEUE_PIPE, floor=QUEUE_FLOOR, floors=[])),
    ("queue_latency_p99_us", dict(title="64-byte messages, ping-pong: one way (half a round trip), p99",
                                  lower=True, peer=QUEUE_PIPE, floor=QUEUE_FLOOR, floors=[])),
])

# The performance issue's targets. Each: (target, numerator, denominator, limit): the cost
# ratio numerator / denominator must be at most `limit` (cost = value where lower is
# better, 1 / value for throughput). A reference is (metric, implementation[, x]); a
# ("net", reference, baseline) denominator subtracts the baseline (Python call cost).
TARGETS = [
    ("Qt-compatible POSIX cycle within 3x of the shared_memory crate",
     ("cycle_4KiB_us", "qshm POSIX (Qt-compatible)"), ("cycle_4KiB_us", SHMEM), 3.0),
    (f"Qt-compatible POSIX cycle with {IDLE} idle processes within 1.2x of itself without",
     ("crowded_cycle_4KiB_us", f"qshm POSIX (Qt-compatible), +{IDLE} idle processes"),
     ("crowded_cycle_4KiB_us", "qshm POSIX (Qt-compatible)"), 1.2),
    ("Fast-mode cycle (POSIX) within 1.5x of the shared_memory crate",
     ("cycle_4KiB_us", "qshm POSIX (fast)"), ("cycle_4KiB_us", SHMEM), 1.5),
    # issue 18: one atomic read-modify-write each way, no syscall
    ("Fast lock+unlock, uncontended, within 2x of the CAS floor",
     ("lock_unlock_ns", "qshm fast"), ("lock_unlock_ns", CAS), 2.0),
    ("Fast lock+unlock, uncontended, at most 0.8x raw_sync",
     ("lock_unlock_ns", "qshm fast"), ("lock_unlock_ns", RAW), 0.8),
] + [
    t for n in (2, 4, 8) for t in (
        (f"Fast, {n} processes: throughput within 1.5x of the floor",
         ("contended_Mops", "qshm fast", n), ("contended_Mops", SPIN, n), 1.5),
        (f"Fast, {n} processes: throughput no lower than raw_sync",
         ("contended_Mops", "qshm fast", n), ("contended_Mops", RAW, n), 1.0),
        (f"Fast, {n} processes: p99 handoff within 1.5x of the floor",
         ("contended_handoff_p99_us", "qshm fast", n), ("contended_handoff_p99_us", SPIN, n), 1.5),
        (f"Fast, {n} processes: p99 handoff no slower than raw_sync",
         ("contended_handoff_p99_us", "qshm fast", n), ("contended_handoff_p99_us", RAW, n), 1.0),
    )
] + [
    # issue 19: more racers on one key must not make it much slower than one racer
    (f"{f}, {n} racers on one key: at least 0.7x the rate of 1",
     ("racers_kcycles_per_s", f, n), ("racers_kcycles_per_s", f, 1), 1 / 0.7)
    for f in ("qshm POSIX (Qt-compatible)", "qshm POSIX (fast)", "qshm System V (Qt-compatible)")
    for n in (2, 4)
] + [
    # issue 23: asking once costs little more than knowing which to call
    (f"{fl}: open_or_create that {how} within {limit}x of {alone} alone",
     ("open_or_create_us", f"{fl}: open_or_create, {how}"), ("open_or_create_us", f"{fl}: {alone} alone"), limit)
    for fl in ("qshm POSIX (Qt-compatible)", "qshm System V (Qt-compatible)")
    for how, alone, limit in (("creates", "create", 1.2), ("attaches", "attach", 1.5))
] + [
    ("Qt-compatible lock+unlock (POSIX) within 1.5x of bare sem_wait+sem_post",
     ("lock_unlock_ns", "qshm Qt-compatible (POSIX)"), ("lock_unlock_ns", SEM_POSIX), 1.5),
    ("Qt-compatible lock+unlock (System V) within 1.3x of bare semop -1/+1",
     ("lock_unlock_ns", "qshm Qt-compatible (System V)"), ("lock_unlock_ns", SEM_SYSV), 1.3),
    ("Qt-compatible cycle (System V) no slower than Qt's own, net of Python calls",
     ("cycle_4KiB_us", "qshm System V (Qt-compatible)"),
     ("net", ("cycle_4KiB_us", "Qt 6 QSharedMemory (PyQt6, System V)"), ("cycle_4KiB_us", QT_BASELINE)), 1.0),
    ("Qt-compatible cycle (POSIX) no slower than Qt's own, net of Python calls",
     ("cycle_4KiB_us", "qshm POSIX (Qt-compatible)"),
     ("net", ("cycle_4KiB_us", "Qt 6 QSharedMemory (PyQt6, POSIX)"), ("cycle_4KiB_us", QT_BASELINE)), 1.0),
] + [
    # issue 23: frame channels (4 MiB frames) and message queues (64-byte messages)
    ("Frames, 1 reader: readers copy at least half as fast as memcpy",
     ("frames_copy_GBps", FRAMES_QSHM, 1), ("frames_copy_GBps", FRAMES_MEMCPY, 1), 2.0),
] + [
    t for n in (1, 2, 4) for t in (
        (f"Frames, {n} reader{'s' if n > 1 else ''}: at least 2x the frames per second of a pipe",
         ("frames_reader_fps", FRAMES_QSHM, n), ("frames_reader_fps", FRAMES_PIPE, n), 0.5),
        (f"Frames, {n} reader{'s' if n > 1 else ''}: no fewer frames per second than a Unix socket",
         ("frames_reader_fps", FRAMES_QSHM, n), ("frames_reader_fps", FRAMES_SOCKET, n), 1.0),
        (f"Frames, {n} reader{'s' if n > 1 else ''}: no fewer frames per second than iceoryx2's publish-subscribe",
         ("frames_reader_fps", FRAMES_QSHM, n), ("frames_reader_fps", FRAMES_ICEORYX2, n), 1.0),
    )
] + [
    ("Async wake-up (changed().await on tokio): one way within 3x of wait_for_change",
     ("notify_wake_median_us", NOTIFY_ASYNC), ("notify_wake_median_us", NOTIFY_SYNC), 3.0),
    ("is_removed() (POSIX) within 3x of one lstat of its name (it makes two lookups)",
     ("removal_check_ns", REMOVED_POSIX), ("removal_check_ns", LSTAT), 3.0),
    ("Queue: throughput at least 2x a pipe's", ("queue_Mmsgs", QUEUE_QSHM), ("queue_Mmsgs", QUEUE_PIPE), 0.5),
    ("Queue: throughput no lower than the floor's (one message per handoff)",
     ("queue_Mmsgs", QUEUE_QSHM), ("queue_Mmsgs", QUEUE_FLOOR), 1.0),
    ("Queue: p99 one-way latency within 1.5x of a pipe's",
     ("queue_latency_p99_us", QUEUE_QSHM), ("queue_latency_p99_us", QUEUE_PIPE), 1.5),
]


# ------------------------------------------------------------------ rows

class Figure:
    def __init__(self, impl, x, median, lo, hi, unit):
        self.impl, self.x, self.median, self.lo, self.hi, self.unit = impl, x, median, lo, hi, unit


def read_rows(path):
    rows = OrderedDict()
    notes, skips = [], []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("# info:"):
            notes.append(line[len("# info:"):].strip())
            continue
        if line.startswith("#"):
            skips.append(line.lstrip("# "))
            continue
        parts = line.split("\t")
        if len(parts) != 7:
            continue
        metric, impl, x, median, lo, hi, unit = parts
        rows.setdefault(metric, []).append(
            Figure(impl, float(x) if x else None, float(median), float(lo), float(hi), unit))
    return rows, notes, skips


def meta(metric):
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("copy_"):
        return dict(title=f"copy {metric.split('_')[1]} into memory", lower=False,
                    peer="memcpy to private memory", floor=None, floors=[])
    return dict(title=metric, lower=True, peer=None, floor=None, floors=[])


def find(rows, metric, impl, x=None):
    for f in rows.get(metric, []):
        if f.impl == impl and (x is None or f.x == x):
            return f
    return None


def cost(f, lower):
    """(median, min, max) as costs: the value, or its inverse for higher-is-better."""
    if lower:
        return f.median, f.lo, f.hi
    return 1 / f.median, 1 / f.hi, 1 / f.lo


def floor_of(m, impl):
    for sub, floor in m["floors"]:
        if sub in impl:
            return floor
    return m["floor"]


def ratio(rows, metric, impl, ref, x=None):
    if ref is None or ref == impl:
        return None
    a, b = find(rows, metric, impl, x), find(rows, metric, ref, x)
    if a is None or b is None:
        return None
    lower = meta(metric)["lower"]
    return cost(a, lower)[0] / cost(b, lower)[0]


# ------------------------------------------------------------------ formatting

def fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_ratio(r):
    return "" if r is None else f"{r:.2f}"


def fmt_x(metric, x):
    if meta(metric).get("xlabel") == "segment size":
        return size_label(x)
    return f"{x:g}"


def size_label(b):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            return f"{b / scale:g} {unit}"
    return f"{b:g} B"


def scalar_table(rows, metric):
    m = meta(metric)
    figs = rows[metric]
    better = "lower is better" if m["lower"] else "higher is better"
    out = [f"### {m['title']} ({figs[0].unit}, {better})", "",
           "| implementation | median | min–max | x peer | x floor |", "|---|---:|---:|---:|---:|"]
    for f in figs:
        out.append(f"| {f.impl} | {fmt(f.median)} | {fmt(f.lo)}–{fmt(f.hi)} | "
                   f"{fmt_ratio(ratio(rows, metric, f.impl, m['peer']))} | "
                   f"{fmt_ratio(ratio(rows, metric, f.impl, floor_of(m, f.impl)))} |")
    refs = describe_refs(m)
    return out + ([""] + refs if refs else []) + [""]


def describe_refs(m):
    parts = []
    if m["peer"]:
        parts.append(f"peer = {m['peer']}")
    if m["floor"]:
        parts.append(f"floor = {m['floor']}")
    for sub, floor in m["floors"]:
        parts.append(f"rows with “{sub}”: " + (f"floor = {floor}" if floor else "no floor ratio"))
    return ["Ratios are cost ratios (above 1 = slower than the reference); " + "; ".join(parts) + "."] \
        if parts else []


def curve_table(rows, metric, chart):
    m = meta(metric)
    figs = rows[metric]
    xs = sorted({f.x for f in figs})
    impls = list(OrderedDict.fromkeys(f.impl for f in figs))
    better = "lower is better" if m["lower"] else "higher is better"
    out = [f"### {m['title']} ({figs[0].unit}, {better})", ""]
    if chart:
        out += [f"![{m['title']}](charts/{chart})", ""]
    out += ["Median (min–max) per point:", "",
            "| implementation | " + " | ".join(fmt_x(metric, x) for x in xs) + " |",
            "|---|" + "---:|" * len(xs)]
    for impl in impls:
        cells = []
        for x in xs:
            f = find(rows, metric, impl, x)
            cells.append("" if f is None else f"{fmt(f.median)} ({fmt(f.lo)}–{fmt(f.hi)})")
        out.append(f"| {impl} | " + " | ".join(cells) + " |")
    out += ["", "Cost ratios against the peer / the floor (above 1 = slower):", "",
            "| implementation | " + " | ".join(fmt_x(metric, x) for x in xs) + " |",
            "|---|" + "---:|" * len(xs)]
    for impl in impls:
        peer, floor = m["peer"], floor_of(m, impl)
        if impl in (peer, floor) or impl.startswith("floor"):
            continue
        cells = []
        for x in xs:
            p, fl = ratio(rows, metric, impl, peer, x), ratio(rows, metric, impl, floor, x)
            cells.append(" / ".join(fmt_ratio(r) if r is not None else "–" for r in (p, fl)))
        out.append(f"| {impl} | " + " | ".join(cells) + " |")
    return out + [""] + describe_refs(m) + [""]


# ------------------------------------------------------------------ targets

def resolve(rows, ref):
    """(median, min, max) cost of a target reference, or None if not measured."""
    if ref[0] == "net":
        a, b = resolve(rows, ref[1]), resolve(rows, ref[2])
        if a is None or b is None:
            return None
        net = (a[0] - b[0], a[1] - b[2], a[2] - b[1])
        return net if net[0] > 0 else None
    metric, impl = ref[0], ref[1]
    f = find(rows, metric, impl, ref[2] if len(ref) > 2 else None)
    return None if f is None else cost(f, meta(metric)["lower"])


def evaluate(rows):
    results = []
    for name, num, den, limit in TARGETS:
        a, b = resolve(rows, num), resolve(rows, den)
        if a is None or b is None:
            results.append((name, limit, None, None, None, "not measured"))
            continue
        r = a[0] / b[0]
        lo = a[1] / b[2] if b[2] > 0 else float("nan")
        hi = a[2] / b[1] if b[1] > 0 else float("inf")
        results.append((name, limit, r, lo, hi, "met" if r <= limit else "missed"))
    return results


def fmt_r(r):
    return f"{r:.3f}" if r < 10 else f"{r:.1f}"


def within_noise(limit, lo, hi):
    """The runs' extremes fall on both sides of the limit: the verdict could flip."""
    return lo <= limit <= hi


def targets_text(results):
    width = max(len(r[0]) for r in results)
    lines = [f"{'target':<{width}}  limit   ratio   (min–max runs)   verdict"]
    for name, limit, r, lo, hi, verdict in results:
        if r is None:
            lines.append(f"{name:<{width}}  {limit:>5.2f}x  {'–':>7}  {'':16}   {verdict}")
        else:
            spread = f"({fmt_r(lo)}–{fmt_r(hi)})"
            noise = " (runs straddle the limit)" if within_noise(limit, lo, hi) else ""
            lines.append(f"{name:<{width}}  {limit:>5.2f}x  {fmt_r(r):>6}x  {spread:16}   {verdict}{noise}")
    return lines


def targets_md(results):
    out = ["| target | limit | ratio (medians) | range (extreme runs) | verdict |", "|---|---:|---:|---:|---|"]
    for name, limit, r, lo, hi, verdict in results:
        if r is None:
            out.append(f"| {name} | {limit:g}x | – | – | {verdict} |")
        else:
            noise = " (runs straddle the limit)" if within_noise(limit, lo, hi) else ""
            out.append(f"| {name} | {limit:g}x | {fmt_r(r)}x | {fmt_r(lo)}–{fmt_r(hi)} | **{verdict}**{noise} |")
    return out


# ------------------------------------------------------------------ charts

# One colour per implementation on every chart; qshm solid, peers dashed, floors dotted.
COLOURS = OrderedDict([
    ("qshm fast", "#1f77b4"), ("qshm POSIX (fast)", "#1f77b4"),
    ("qshm Qt-compatible (POSIX)", "#ff7f0e"), ("qshm POSIX (Qt-compatible)", "#ff7f0e"),
    ("qshm System V (fast)", "#17becf"),
    ("qshm Qt-compatible (System V)", "#d62728"), ("qshm System V (Qt-compatible)", "#d62728"),
    (RAW, "#9467bd"), (SHMEM, "#9467bd"), ("Python multiprocessing.shared_memory", "#8c564b"),
    (SPIN, "#2ca02c"), (RAW_POSIX, "#2ca02c"), (RAW_SYSV, "#7f7f7f"),
])
SPARE = ["#e377c2", "#bcbd22", "#393b79", "#637939"]


def colour(impl, i):
    return COLOURS.get(impl, SPARE[i % len(SPARE)])


def style(impl):
    if impl.startswith("floor") or impl.startswith("bare"):
        return dict(linestyle=":", marker="s")
    if impl.startswith("qshm"):
        return dict(linestyle="-", marker="o")
    return dict(linestyle="--", marker="^")


def draw_charts(rows, outdir):
    """Draw every curve metric with a chart name; returns (renderer, {metric: file})."""
    curves = [(metric, METRICS[metric]) for metric in rows
              if metric in METRICS and METRICS[metric].get("chart")]
    if not curves:
        return None, {}
    os.makedirs(outdir, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FixedFormatter, NullLocator
        renderer = f"matplotlib {matplotlib.__version__}"
    except ImportError:
        plt = None
        renderer = "the fallback SVG writer in report.py (matplotlib missing)"
    files = {}
    for metric, m in curves:
        figs = rows[metric]
        xs = sorted({f.x for f in figs})
        series = OrderedDict()
        for f in figs:
            series.setdefault(f.impl, []).append(f)
        path = os.path.join(outdir, m["chart"])
        title = m["title"]
        xlabel = m["xlabel"] + (" (log scale)" if len(xs) > 1 else "")
        ylabel = f"{m['ylabel']} (log scale)"
        if plt is None:
            fallback_svg(path, title, xlabel, ylabel, series, xs, metric)
        else:
            plt.rcParams.update({"svg.hashsalt": "qshm-bench", "svg.fonttype": "none",
                                 "font.size": 9})
            fig, ax = plt.subplots(figsize=(8.5, 5.2))
            for i, (impl, pts) in enumerate(series.items()):
                pts.sort(key=lambda f: f.x)
                px = [f.x for f in pts]
                c = colour(impl, i)
                ax.plot(px, [f.median for f in pts], label=impl, color=c, linewidth=1.4, markersize=4,
                        **style(impl))
                ax.fill_between(px, [f.lo for f in pts], [f.hi for f in pts], color=c, alpha=0.12, linewidth=0)
            ax.set_xscale("log", base=2 if metric.startswith("contended") else 10)
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(xs))
            ax.xaxis.set_major_formatter(FixedFormatter([fmt_x(metric, x) for x in xs]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title + "\nmedian; band = min–max over runs", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            fig.tight_layout()
            fig.savefig(path, format="svg", metadata={"Date": None})
            plt.close(fig)
        files[metric] = m["chart"]
    return renderer, files


def fallback_svg(path, title, xlabel, ylabel, series, xs, metric):
    """A minimal log-log line chart (medians and min–max whiskers) as plain SVG."""
    w, h, left, right, top, bottom = 860, 520, 80, 300, 50, 60
    ys = [v for pts in series.values() for f in pts for v in (f.lo, f.hi) if v > 0]
    ylo, yhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    if yhi == ylo:
        yhi += 1
    xlo, xhi = math.log(min(xs)), math.log(max(xs))
    if xhi == xlo:
        xhi += 1

    def px(x):
        return left + (math.log(x) - xlo) / (xhi - xlo) * (w - left - right)

    def py(y):
        return h - bottom - (math.log10(y) - ylo) / (yhi - ylo) * (h - top - bottom)

    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="13">{esc(title)}</text>',
           f'<text x="{(left + w - right) / 2}" y="{h - 15}" text-anchor="middle">{esc(xlabel)}</text>',
           f'<text x="18" y="{(top + h - bottom) / 2}" text-anchor="middle" '
           f'transform="rotate(-90 18 {(top + h - bottom) / 2})">{esc(ylabel)}</text>']
    for e in range(ylo, yhi + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{left}" y1="{y}" x2="{w - right}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">1e{e}</text>')
    for x in xs:
        out.append(f'<line x1="{px(x)}" y1="{top}" x2="{px(x)}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{px(x)}" y="{h - bottom + 16}" text-anchor="middle">{fmt_x(metric, x)}</text>')
    for i, (impl, pts) in enumerate(series.items()):
        c = colour(impl, i)
        pts.sort(key=lambda f: f.x)
        dash = ' stroke-dasharray="2,3"' if impl.startswith(("floor", "bare")) else \
            '' if impl.startswith("qshm") else ' stroke-dasharray="6,3"'
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5"{dash} points="'
                   + " ".join(f"{px(f.x):.1f},{py(f.median):.1f}" for f in pts) + '"/>')
        for f in pts:
            out.append(f'<line x1="{px(f.x)}" y1="{py(f.lo)}" x2="{px(f.x)}" y2="{py(f.hi)}" stroke="{c}"/>')
        ly = top + 14 * i
        out.append(f'<line x1="{w - right + 10}" y1="{ly}" x2="{w - right + 30}" y2="{ly}" stroke="{c}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{w - right + 34}" y="{ly + 4}" font-size="9">{esc(impl)}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


# ------------------------------------------------------------------ machine and main

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
    try:
        load = open("/proc/loadavg", encoding="utf-8").read().split()[:3]
    except OSError:
        load = ["?"]
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"CPU: {cpu}, {os.cpu_count()} cores",
        f"kernel: {platform.release()}",
        f"rustc: {cmd('rustc', '--version')}",
        f"python: {platform.python_version()}",
        f"load average at the end (1, 5, 15 min): {' '.join(load)}",
    ]


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    seconds = None
    if "--seconds" in args:
        seconds = args[args.index("--seconds") + 1]
    rows_path, out_path = [a for a in args if not a.startswith("--") and a != seconds][:2]
    rows, notes, skips = read_rows(rows_path)
    outdir = os.path.join(os.path.dirname(os.path.abspath(out_path)), "charts")
    renderer, charts = draw_charts(rows, outdir)

    body = []
    for metric in list(METRICS) + [m for m in rows if m not in METRICS]:
        if metric not in rows:
            continue
        if any(f.x is not None for f in rows[metric]):
            body += curve_table(rows, metric, charts.get(metric))
        else:
            body += scalar_table(rows, metric)
    results = evaluate(rows)

    for line in body:
        if not line.startswith("!["):
            print(line)
    for s in skips:
        print("skipped:", s)
    if renderer:
        print(f"charts: {', '.join(sorted(charts.values()))} in {outdir} ({renderer})")
    print()
    print("Targets of the performance issue (cost ratio = how many times slower; met if <= limit):")
    for line in targets_text(results):
        print(line)

    run = "quick run (`--quick`: smaller ranges, fewer repetitions)" if quick else "full run"
    out = ["# qshm benchmark results", "",
           f"Produced by `bench/compare.sh` ({run}"
           + (f", {seconds} s of measurement" if seconds else "") + "). Every figure is the median",
           "over repeated runs with the min–max spread of those runs, all measured in the same run on",
           "the same machine. Ratios are cost ratios against a peer and against the hardware floor",
           "measured in the same run (time, or 1/throughput: above 1 = slower than the reference).",
           "qshm is used through its public API only.", "",
           "## Machine", ""] + [f"- {m}" for m in machine()] + [""]
    if notes:
        out += ["## Run notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Targets", "",
            "From the performance issue; the list lives in `TARGETS` in `bench/py/report.py`. The ratio",
            "is of the two medians (cost: time, or 1/throughput); the range pairs the extreme runs of",
            "both sides (best against worst), so a verdict whose range straddles the limit is within",
            "this machine's noise.", ""] \
        + targets_md(results) + ["", "## How each figure is measured", ""] + HOW + ["", "## Figures", ""] + body
    if renderer:
        out += [f"Charts drawn with {renderer}: "
                + ", ".join(f"[{c}](charts/{c})" for c in sorted(charts.values())) + ".", ""]
    if skips:
        out += ["## Skipped", ""] + [f"- {s}" for s in skips] + [""]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(out).rstrip("\n") + "\n")


HOW = [
    "- **floor (lock)**: a test-and-test-and-set spin lock on a word of a MAP_SHARED /dev/shm mapping:",
    "  uncontended one acquire compare-exchange and one release store; contended waiters spin on a",
    "  load and yield every 100 spins (there are more processes than cores). Its data sits a cache",
    "  line away from the word, as a segment's data does from qshm's lock state.",
    "- **two-CAS floor (uncontended lock)**: a compare-and-swap to take and one to give back on a",
    "  MAP_SHARED word: the least a lock whose waiters sleep can do, as its release must see",
    "  atomically whether anyone sleeps (the spin floor's release is a plain store: nobody sleeps).",
    "- **asymmetric fence**: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` while another process that",
    "  registered for it spins on another CPU (as a lock holder would), against `getppid`. A lock could",
    "  give itself back with a plain store (the spin floor's release) only if every waiter paid this",
    "  before it sleeps; qshm's Fast lock does not (one compare-and-swap each way).",
    "- **bare semaphores**: `sem_wait`+`sem_post` (POSIX) and `semop(-1)`+`semop(+1)` with `SEM_UNDO`",
    "  (System V) from Rust on the very semaphore qshm's `LockMode::QtCompatible` takes for that",
    "  segment (`SharedMemory::semaphore_key`): the floor of that mode.",
    "- **cycle floors**: raw `shm_open`+`ftruncate`+`mmap` (+ a second `shm_open`+`mmap` for the",
    "  attach) … `munmap`+`shm_unlink`, and `shmget(IPC_PRIVATE)`+`shmat` … `shmdt`+`IPC_RMID`: the",
    "  system calls alone, no key derivation, lock state or checks.",
    "- **Qt 6 cycle** (PyQt6): `QSharedMemory(legacyNativeKey(key, type))`, `create(4096)`, a second",
    "  handle `attach()`, both `detach()`, both handles destroyed. Qt leaves POSIX segment files in",
    "  /dev/shm after the last detach; they are unlinked after the timed loop. Its interpreter",
    "  baseline runs the same calls on a no-op Python class: Qt's own cost is the difference.",
    f"- **crowded cycle**: the POSIX cycles right before, and while, {IDLE} `sleep 600` processes",
    "  (one process group, all killed afterwards) run on the machine.",
    "- **size curve**: create, write one byte to every page, destroy (no second handle).",
    "- **contended**: N processes (from 2 on pinned round robin to the CPUs) lock, increment a counter,",
    "  unlock, then do about 300 ns of other work (see the run notes), for a fixed window. Without",
    "  that work a process re-takes the lock it just released and the lock only changes hands when",
    "  the scheduler preempts its holder. Throughput runs take no timestamps. Separate latency runs",
    "  stamp the clock (CLOCK_MONOTONIC) just before each unlock; a process taking the lock from",
    "  another process records the time since that stamp (log histogram, 2% buckets). Counters are",
    "  checked for lost increments. With more processes than cores, holders get preempted.",
    "- **change notification**: two processes on two CPUs ping-pong a wake-up, both sleeping in the",
    "  kernel while they wait: qshm's `notify_all` -> `wait_for_change` (one segment's generation",
    "  counter, made odd by one side and even by the other), an `eventfd` each way (8-byte write ->",
    "  blocking read), a pipe each way (1 byte), and the floor: the bare shared futex (`FUTEX_WAKE`",
    "  -> `FUTEX_WAIT` on a MAP_SHARED word, no waiter count, no checks). One-way = half of each",
    "  round trip; a tenth as many round trips warm up first; per run the median and p99.",
    "- **async wake-up** (issue 23): the same ping-pong with both processes awaiting",
    "  `changed()` in a tokio current-thread runtime (`block_on` per wait); each wake-up goes",
    "  through the process's bridge thread, which sleeps in the same futex wait and wakes the task.",
    "- **removal check** (issue 23): `is_removed()` on an attached segment nobody removed, called",
    "  in a loop, against the one system call that answers it for the segment alone: `lstat` of",
    "  its /dev/shm name (POSIX), `shmctl(IPC_STAT)` of its id (System V). qshm also looks up its",
    "  lock state's name (an `lstat`), so it makes two lookups.",
    "- **frames** (issue 23): one writer publishes 4 MiB frames for a fixed window while 1, 2 or 4",
    "  reader processes copy them into their own buffers: qshm's `FrameWriter` -> `FrameReader::read_next`",
    "  (the writer never waits; readers get the newest frame and skip others), a pipe and a Unix stream",
    "  socket per reader (every frame to every reader, so the writer waits for the slowest), and, when",
    "  the bench is built with `--features iceoryx2` (its bindgen build needs libclang), iceoryx2's",
    "  publish-subscribe (safe overflow, no history, the subscriber copies each sample out). Frames per",
    "  second per reader, bytes all readers copied per second, frames published per second. The floor:",
    "  memcpy of 4 MiB frames into 3 private buffers in turn (a channel's working set), one process,",
    "  same run. Nothing is pinned (the writer and the readers share the 2 cores).",
    "- **message queues** (issue 23): 64-byte messages between two processes pinned to two CPUs: qshm's",
    "  `Producer` -> `Consumer` (1024 slots), a pipe and a Unix stream socket (one write and one read per",
    "  message), and the floor: two atomics on a shared word (a store, then a load; the waiter spins and",
    "  yields every 100 spins, as more processes than cores may run). Throughput: a million messages",
    "  (quick: 100 000) as fast as the channel takes them; the floor holds one message at a time, so its",
    "  throughput is its ping-pong rate. Latency: a ping-pong of one message each way (a second queue or",
    "  pipe back), one way = half a round trip; per run the median and p99.",
    "- **two-process handoff**: two processes on two different CPUs take turns through a turn",
    "  counter under the lock (the side whose turn it is not unlocks and yields); one-way handoff =",
    "  half the time between the parent's consecutive moves.",
]


if __name__ == "__main__":
    main()
