#!/usr/bin/env python3
"""Plots for the bench-*.sh results.

  usage: scripts/bench-plot.py [BENCH_DIR]      (default: bench/ next to scripts/)

  BENCH_DIR/latency-samples.csv -> BENCH_DIR/latency.png   per-request latency CDFs, (a) vs (b)
  BENCH_DIR/failover.csv        -> BENCH_DIR/failover.png  failover gap per kill
  BENCH_DIR/group.csv           -> BENCH_DIR/group.png     replication modes x followers

Each plot is drawn only if its CSV exists. Lines starting with '#' in the CSVs (provenance) are
shown as the figure's caption. Installs matplotlib with pip if it is missing.
"""
import csv
import os
import subprocess
import sys


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench-plot.py: installing matplotlib (pip)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_csv(path):
    """(rows as dicts, '#' comment lines)."""
    comments, body = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                comments.append(line[1:].strip())
            elif line.strip():
                body.append(line)
    return list(csv.DictReader(body)), comments


def plot_latency(plt, bench):
    src = os.path.join(bench, "latency-samples.csv")
    if not os.path.exists(src):
        return
    rows, comments = read_csv(src)
    series = {}
    for r in rows:
        series.setdefault(r["config"], []).append(float(r["us"]))
    if not series:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    for label, us in series.items():
        us = sorted(us)
        n = len(us)
        ax1.plot(us, [(i + 1) / n for i in range(n)], label=f"{label} (n={n}, p50 {us[n // 2]:.0f} us)")
    ax1.set_xscale("log")
    ax1.set_xlabel("INCR round trip seen by the client (us, log scale)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("Per-request latency CDF: (a) unreplicated vs (b) primary + backup")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    labels = list(series)
    ax2.boxplot([series[k] for k in labels], whis=(1, 99), showfliers=False)
    ax2.set_xticks(range(1, len(labels) + 1))
    ax2.set_xticklabels([k.replace("b: primary+backup ", "b ").replace("a: run", "a: run") for k in labels], rotation=30, ha="right", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("us (box: p25-p75, whiskers: p1-p99)")
    ax2.set_title("Same data, per config")
    ax2.grid(True, axis="y", which="both", alpha=0.3)
    fig.text(0.01, 0.005, " | ".join(comments), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = os.path.join(bench, "latency.png")
    fig.savefig(out, dpi=110)
    print(f"bench-plot.py: wrote {out}", file=sys.stderr)


def plot_failover(plt, bench):
    src = os.path.join(bench, "failover.csv")
    if not os.path.exists(src):
        return
    rows, comments = read_csv(src)
    rows = [r for r in rows if r.get("gap_ms") not in (None, "", "-")]
    if not rows:
        return
    xs = [int(r["kill"]) for r in rows]
    gap = [float(r["gap_ms"]) for r in rows]
    det = [float(r["golive_ms"]) if r.get("golive_ms") not in (None, "", "-") else 0.0 for r in rows]
    rest = [max(0.0, g - d) for g, d in zip(gap, det)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    ax1.bar(xs, det, label="kill -> backup logs GOING LIVE", color="tab:orange")
    ax1.bar(xs, rest, bottom=det, label="GOING LIVE -> client's next reply", color="tab:blue")
    bad = [x for x, r in zip(xs, rows) if r.get("ok") != "yes"]
    for x in bad:
        ax1.annotate("!", (x, gap[xs.index(x)]), ha="center", va="bottom", color="red", fontsize=14)
    med = sorted(gap)[len(gap) // 2]
    ax1.axhline(250, color="red", ls="--", lw=1, label="target: median < 250 ms")
    ax1.axhline(med, color="black", ls=":", lw=1, label=f"median {med:.0f} ms")
    ax1.set_xlabel("kill #")
    ax1.set_xticks(xs)
    ax1.set_ylabel("gap seen by the client (ms)")
    ax1.set_title("Failover: kill -9 of host-a -> first INCR reply after it")
    ax1.legend(fontsize=8)
    ax1.grid(True, axis="y", alpha=0.3)
    ax2.boxplot([gap], whis=(0, 100))
    ax2.set_xticks([1])
    ax2.set_xticklabels([f"{len(gap)} kills"])
    ax2.set_ylabel("gap (ms)")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.text(0.01, 0.005, " | ".join(comments), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = os.path.join(bench, "failover.png")
    fig.savefig(out, dpi=110)
    print(f"bench-plot.py: wrote {out}", file=sys.stderr)


def plot_group(plt, bench):
    src = os.path.join(bench, "group.csv")
    if not os.path.exists(src):
        return
    rows, comments = read_csv(src)
    # (mode, followers, clients, config) -> row; configs in the order the run measured them.
    by = {(r["mode"], r["followers"], r["clients"], r["config"]): r for r in rows}
    groups = []
    for r in rows:
        g = (r["mode"], r["followers"])
        if g not in groups:
            groups.append(g)
    groups.sort(key=lambda g: (["sync", "semi-sync", "quorum:2", "async"].index(g[0]) if g[0] in ("sync", "semi-sync", "quorum:2", "async") else 9, g[1]))
    labels = ["%s x%s" % g for g in groups]
    colors = {"sync": "tab:blue", "semi-sync": "tab:green", "quorum:2": "tab:purple", "async": "tab:orange"}

    def val(g, c, cfg, key):
        r = by.get((g[0], g[1], c, cfg))
        try:
            return float(r[key])
        except (TypeError, KeyError, ValueError):
            return float("nan")

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    xs = range(len(groups))
    cs = [colors.get(g[0], "gray") for g in groups]
    # Added p50 and p99 at -c 1: (b) minus (a) of the same phase.
    add50 = [(val(g, "1", "b", "p50_ms") - val(g, "1", "a", "p50_ms")) * 1000 for g in groups]
    add99 = [(val(g, "1", "b", "p99_ms") - val(g, "1", "a", "p99_ms")) * 1000 for g in groups]
    ax = axes[0]
    ax.bar(xs, add50, color=cs)
    ax.plot(xs, add99, "k.", label="added p99")
    ax.set_title("INCR -c 1: added latency vs unreplicated (same phase)")
    ax.set_ylabel("us (bars: added p50)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ratio = [val(g, "50", "b", "rps") / val(g, "50", "a", "rps") for g in groups]
    ratio1 = [val(g, "1", "b", "rps") / val(g, "1", "a", "rps") for g in groups]
    ax.bar([x - 0.2 for x in xs], ratio1, width=0.4, color=cs, alpha=0.5, label="-c 1")
    ax.bar([x + 0.2 for x in xs], ratio, width=0.4, color=cs, label="-c 50")
    ax.axhline(1.0, color="gray", lw=1)
    ax.set_title("INCR throughput, group / unreplicated")
    ax.legend(fontsize=8)
    ax = axes[2]
    held = [val(g, "1", "b", "held_p50_us") for g in groups]
    held99 = [val(g, "1", "b", "held_p99_us") for g in groups]
    ax.bar(xs, held, color=cs)
    ax.plot(xs, held99, "k.", label="held p99")
    ax.set_yscale("log")
    ax.set_title("INCR -c 1: output held by the Output Rule")
    ax.set_ylabel("us, log scale (bars: held p50)")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.text(0.01, 0.005, " | ".join(comments), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = os.path.join(bench, "group.png")
    fig.savefig(out, dpi=110)
    print(f"bench-plot.py: wrote {out}", file=sys.stderr)


def main():
    bench = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")
    plt = need_matplotlib()
    plot_latency(plt, bench)
    plot_failover(plt, bench)
    plot_group(plt, bench)


if __name__ == "__main__":
    main()
