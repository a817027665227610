#!/usr/bin/env python3
"""Where the CPU went during a benchmark, measured rather than guessed (scripts/bench-group.sh).

  cpu-snap.py snap NAME=PID ...        one snapshot as JSON on stdout
  cpu-snap.py diff BEFORE AFTER N      per-request CPU between two snapshots, as JSON

A snapshot holds, per named process and per thread name (comm), the time its threads ran on
a CPU and the time they were runnable but waited for one (/proc/PID/task/TID/schedstat: run
ns, run-queue wait ns, both at nanosecond resolution, unlike the 10 ms ticks of .../stat), the
machine's /proc/stat CPU line, and the CPU ticks of every other process on the machine, so
that CPU taken by work outside the benchmark (other engineers' builds and tests on a shared
machine) shows up by name. The run-queue wait is the direct measure of contention: time a
thread could have run and did not, because the cores were busy.

Standard library only.
"""
import json
import os
import sys
import time


def read(path):
    with open(path) as f:
        return f.read()


def threads(pid):
    """{comm: [run_ns, wait_ns, nthreads]} over the threads of PID (empty if it is gone)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        base = "/proc/%d/task/%s" % (pid, tid)
        try:
            comm = read(base + "/comm").strip()
            run_ns, wait_ns = (int(x) for x in read(base + "/schedstat").split()[:2])
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        acc = out.setdefault(comm, [0, 0, 0])
        acc[0] += run_ns
        acc[1] += wait_ns
        acc[2] += 1
    return out


def all_procs(exclude):
    """{"comm pid": ticks (user + system)} for every process but those in exclude."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            st = read("/proc/%s/stat" % d)
        except OSError:
            continue
        comm = st[st.index("(") + 1 : st.rindex(")")]
        f = st[st.rindex(")") + 2 :].split()
        out["%s %s" % (comm, d)] = int(f[11]) + int(f[12])
    return out


def snap(specs):
    procs = {}
    pids = set()
    for spec in specs:
        name, _, pid = spec.partition("=")
        procs[name] = threads(int(pid))
        pids.add(int(pid))
    cpu = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    return {"t": time.monotonic(), "cpu": cpu, "procs": procs, "others": all_procs(pids)}


def diff(a, b, n):
    """Per request (us): each process's run and run-queue wait by thread; the machine's busy
    share; the top CPU users outside the named processes."""
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    dt = max(1e-9, b["t"] - a["t"])
    out = {"seconds": round(dt, 3), "procs": {}}
    for name, after in b["procs"].items():
        before = a["procs"].get(name, {})
        per = {}
        for comm, (run, wait, _) in after.items():
            r0, w0, _ = before.get(comm, [0, 0, 0])
            per[comm] = [round((run - r0) / 1e3 / n, 1), round((wait - w0) / 1e3 / n, 1)]
        out["procs"][name] = per
    # /proc/stat: user nice system idle iowait irq softirq steal ...; busy = all but idle+iowait.
    d = [y - x for x, y in zip(a["cpu"], b["cpu"])]
    total = sum(d[:8]) or 1
    out["busy_pct"] = round(100.0 * (total - d[3] - d[4]) / total, 1)
    out["steal_pct"] = round(100.0 * d[7] / total, 1) if len(d) > 7 else 0.0
    # /proc/stat counts ticks summed over all CPUs: busy ticks are CPU time of the whole machine.
    out["machine_cpu_us_per_req"] = round((total - d[3] - d[4]) * tick_us / n, 1)
    others = []
    for k, v in b["others"].items():
        used = v - a["others"].get(k, v)
        if used > 0:
            others.append((used, k))
    others.sort(reverse=True)
    out["others_top"] = [[k, round(used * tick_us / 1e3 / dt, 1)] for used, k in others[:6]]  # ms of CPU per s
    out["others_ms_per_s"] = round(sum(u for u, _ in others) * tick_us / 1e3 / dt, 1)
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "snap":
        print(json.dumps(snap(sys.argv[2:])))
    elif len(sys.argv) == 5 and sys.argv[1] == "diff":
        a, b = (json.loads(read(p)) for p in sys.argv[2:4])
        print(json.dumps(diff(a, b, int(sys.argv[4]))))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
