#!/usr/bin/env python3
"""Small network clients for the bench-*.sh scripts (stdlib only).

  benchtools.py pp-server ADDR:PORT
      TCP ping-pong echo server, 1-byte messages, TCP_NODELAY, one thread per connection.
  benchtools.py pp-client ADDR:PORT [--count N] [--max-seconds S]
      N round trips of 1 byte (after a warm-up); prints one JSON object (n, p50_us, p99_us, ...).
  benchtools.py latency HOST:PORT --label L [--count N] [--max-seconds S] [--out CSV]
      N sequential INCRs on one connection; appends "label,seq,us" to CSV, prints a JSON summary.
  benchtools.py failover HOST:PORT --kill-ns NS [--kill-after S] [--jitter S] [--timeout S]
      INCR in a loop on one connection, timestamping each reply; after --kill-after seconds
      (+ random jitter) a second thread kill -9s every process in netns NS; prints a JSON object
      with the gap from the kill to the first reply after it and whether the counter stayed exact.
  benchtools.py status-sampler ADDR:PORT --out FILE [--interval S]
      Every interval, reads the one JSON line served by `ftvmm ... --status ADDR` and appends
      it (with "t" = unix time) to FILE, until SIGTERM.

All times are measured with time.perf_counter_ns() inside one process.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def summary(us):
    s = sorted(us)
    return {
        "n": len(s),
        "min_us": round(s[0], 1) if s else None,
        "p50_us": round(pct(s, 50), 1) if s else None,
        "p90_us": round(pct(s, 90), 1) if s else None,
        "p99_us": round(pct(s, 99), 1) if s else None,
        "max_us": round(s[-1], 1) if s else None,
        "mean_us": round(sum(s) / len(s), 1) if s else None,
    }


def connect(addr, timeout=5.0):
    sock = socket.create_connection(hostport(addr), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---------------------------------------------------------------- ping-pong


def pp_server(args):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(hostport(args.addr))
    srv.listen(16)
    print(f"pp-server listening on {args.addr}", flush=True)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with c:
            while True:
                b = c.recv(1)
                if not b:
                    return
                c.sendall(b)

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def pp_client(args):
    sock = connect(args.addr)
    sock.settimeout(10.0)
    one = b"x"
    for _ in range(args.warmup):
        sock.sendall(one)
        sock.recv(1)
    us = []
    deadline = time.perf_counter() + args.max_seconds
    while len(us) < args.count and (len(us) < args.min_count or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        sock.sendall(one)
        if not sock.recv(1):
            raise SystemExit("pp-client: server closed the connection")
        us.append((time.perf_counter_ns() - t0) / 1000.0)
    sock.close()
    print(json.dumps(summary(us)))


# ---------------------------------------------------------------- RESP


class Resp:
    """Just enough RESP2 for INCR and PING on one blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("error reply: " + rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buf += chunk
            v, self.buf = self.buf[:n], self.buf[n + 2 :]
            return v
        raise RuntimeError(f"unexpected reply {line!r}")

    @staticmethod
    def cmd(*parts):
        out = [b"*%d\r\n" % len(parts)]
        for p in parts:
            p = p if isinstance(p, bytes) else str(p).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(p), p))
        return b"".join(out)


def latency(args):
    sock = connect(args.addr)
    sock.settimeout(10.0)
    r = Resp(sock)
    key = args.key or f"lat:{os.getpid()}"
    req = Resp.cmd("INCR", key)
    for _ in range(args.warmup):
        sock.sendall(req)
        r.reply()
    us = []
    deadline = time.perf_counter() + args.max_seconds
    while len(us) < args.count and (len(us) < args.min_count or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        sock.sendall(req)
        r.reply()
        us.append((time.perf_counter_ns() - t0) / 1000.0)
    sock.close()
    if args.out:
        with open(args.out, "a") as f:
            for i, v in enumerate(us):
                f.write(f"{args.label},{i},{v:.1f}\n")
    s = summary(us)
    s["label"] = args.label
    print(json.dumps(s))


# ---------------------------------------------------------------- failover


def tcp_info(sock):
    """(rto_us, total_retrans) from TCP_INFO (struct tcp_info offsets 8 and 100)."""
    try:
        b = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("I", b, 8)[0], struct.unpack_from("I", b, 100)[0]
    except OSError:
        return None, None


def task_states(pid):
    """{tid: "comm state wchan"} of PID's threads that have not exited yet."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(base + "/stat") as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            state = stat[stat.rindex(")") + 2]
            with open(base + "/wchan") as f:
                wchan = f.read().strip() or "-"
            if state == "D":
                # Where in the kernel it sleeps (root only; a kernel without it says nothing).
                try:
                    with open(base + "/stack") as f:
                        frames = [l.split()[-1].split("+")[0] for l in f if l.strip()]
                    wchan = "<".join(frames[:8]) or wchan
                except OSError:
                    pass
        except (OSError, ValueError):
            continue
        if state not in "ZX":
            out[tid] = f"{comm} {state} {wchan}"
    return out


def fd_table(pids):
    """PIDS' open files in fd order, short: what the kernel closes, in which order, when they die."""
    out = []
    for pid in pids:
        try:
            fds = sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            t = t.replace("anon_inode:", "").replace("socket:", "sock").replace("/dev/net/", "")
            out.append(f"{fd}={t}")
    return " ".join(out)


def watch_exit(pids, t_kill, limit_s=1.0):
    """How long after the kill (perf_counter_ns t_kill) every thread of PIDS had exited (ms),
    and what the last threads still alive were doing: where a slow exit goes. Polls /proc
    every 0.5 ms; a process that exited is a zombie (its parent reaps it) or gone."""
    last = {}
    while time.perf_counter_ns() - t_kill < limit_s * 1e9:
        alive = {}
        for pid in pids:
            alive.update({f"{pid}/{t}": v for t, v in task_states(pid).items()})
        if not alive:
            return round((time.perf_counter_ns() - t_kill) / 1e6, 2), "; ".join(sorted(set(last.values())))
        last = alive
        time.sleep(0.0005)
    return None, "; ".join(sorted(set(last.values())))


def failover(args):
    sock = connect(args.addr)
    sock.settimeout(args.timeout)
    r = Resp(sock)
    key = args.key or f"fo:{os.getpid()}"
    req = Resp.cmd("INCR", key)
    # Every reply: (perf_counter_ns at receipt, value).
    replies = []
    kill = {}
    stop = threading.Event()

    def killer():
        delay = args.kill_after + random.uniform(0, args.jitter)
        if stop.wait(delay):
            return
        pids = subprocess.run(["ip", "netns", "pids", args.kill_ns], capture_output=True, text=True).stdout.split()
        kill["rto_us_before"], kill["retrans_before"] = tcp_info(sock)
        kill["fds"] = fd_table([int(p) for p in pids if p.isdigit()])
        kill["wall"] = time.time()
        kill["t"] = time.perf_counter_ns()
        for p in pids:
            try:
                os.kill(int(p), getattr(signal, "SIG" + args.signal))
            except (ProcessLookupError, ValueError):
                pass
        kill["pids"] = len(pids)
        if args.signal == "KILL":
            kill["exit_ms"], kill["exit_last"] = watch_exit([int(p) for p in pids if p.isdigit()], kill["t"])

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = {"ok": False}
    t_start = time.perf_counter_ns()
    after = 0
    try:
        while True:
            t_send = time.perf_counter_ns()
            sock.sendall(req)
            v = r.reply()
            t = time.perf_counter_ns()
            replies.append((t_send, t, v))
            if "t" in kill and t > kill["t"]:
                after += 1
                if after >= args.after:
                    break
            if time.perf_counter_ns() - t_start > (args.kill_after + args.jitter + args.timeout) * 1e9:
                out["error"] = "no kill happened"
                break
    except (OSError, ConnectionError, RuntimeError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    stop.set()
    th.join(timeout=1)
    sock_info = tcp_info(sock)
    sock.close()

    vals = [v for _, _, v in replies]
    exact = all(b == a + 1 for a, b in zip(vals, vals[1:])) and (not vals or vals[0] == 1)
    out.update({"replies": len(vals), "first_value": vals[0] if vals else None, "exact": exact, "pids_killed": kill.get("pids", 0)})
    if "t" in kill:
        before = [x for x in replies if x[1] <= kill["t"]]
        post = [x for x in replies if x[1] > kill["t"]]
        if before:
            prev = sorted((t - s) / 1000.0 for s, t, _ in before[1:] or before)
            out["prekill_p50_us"] = round(pct(prev, 50), 1)
            out["prekill_max_us"] = round(prev[-1], 1)
            out["last_before"] = before[-1][2]
        if post:
            out["first_after"] = post[0][2]
            # The first reply received after the kill (it may have left the primary just before).
            out["first_reply_ms"] = round((post[0][1] - kill["t"]) / 1e6, 3)
            # Service restored: the first reply to a request sent after the kill.
            sent_after = [x for x in post if x[0] > kill["t"]]
            if sent_after:
                out["gap_ms"] = round((sent_after[0][1] - kill["t"]) / 1e6, 3)
            # The longest silence between two replies around the kill.
            around = [t for _, t, _ in replies if t > kill["t"] - 500e6]
            out["stall_ms"] = round(max(b - a for a, b in zip(around, around[1:])) / 1e6, 3) if len(around) > 1 else None
            # How long the request in flight at the kill waited for its reply.
            out["inflight_wait_ms"] = round((post[0][1] - post[0][0]) / 1e6, 3)
            nxt = sorted((t - s) / 1000.0 for s, t, _ in post[1:])
            if nxt:
                out["postkill_p50_us"] = round(pct(nxt, 50), 1)
        out["kill_wall"] = kill["wall"]
        # The killer thread may still be watching the exit; it ends within its own deadline.
        th.join(timeout=2)
        out["exit_ms"] = kill.get("exit_ms")
        out["exit_last"] = kill.get("exit_last")
        out["fds"] = kill.get("fds")
        out["rto_us_before"] = kill["rto_us_before"]
        if kill["retrans_before"] is not None and sock_info[1] is not None:
            out["client_retrans"] = sock_info[1] - kill["retrans_before"]
        out["ok"] = bool(post) and exact and out.get("last_before") is not None and out["first_after"] == out["last_before"] + 1
    print(json.dumps(out))


# ---------------------------------------------------------------- status sampler


def status_sampler(args):
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    with open(args.out, "a") as f:
        while running[0]:
            try:
                # The status port speaks HTTP (GET /status, one response, then close).
                s = socket.create_connection(hostport(args.addr), timeout=1.0)
                s.sendall(b"GET /status HTTP/1.1\r\nHost: ftvmm\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    data += c
                s.close()
                head, _, body = data.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
                    raise ValueError("not a 200 response")
                j = json.loads(body.decode())
                j["t"] = time.time()
                f.write(json.dumps(j) + "\n")
                f.flush()
            except (OSError, ValueError):
                pass
            time.sleep(args.interval)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pp-server")
    p.add_argument("addr")
    p.set_defaults(fn=pp_server)
    p = sub.add_parser("pp-client")
    p.add_argument("addr")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--min-count", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=int, default=100)
    p.set_defaults(fn=pp_client)
    p = sub.add_parser("latency")
    p.add_argument("addr")
    p.add_argument("--label", required=True)
    p.add_argument("--key")
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--min-count", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--out")
    p.set_defaults(fn=latency)
    p = sub.add_parser("failover")
    p.add_argument("addr")
    p.add_argument("--kill-ns", required=True)
    p.add_argument("--kill-after", type=float, default=1.0)
    p.add_argument("--signal", default="KILL", choices=["KILL", "STOP"], help="KILL: the process dies; STOP: it hangs")
    p.add_argument("--jitter", type=float, default=0.2)
    p.add_argument("--after", type=int, default=20, help="replies to collect after the failover")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--key")
    p.set_defaults(fn=failover)
    p = sub.add_parser("status-sampler")
    p.add_argument("addr")
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.25)
    p.set_defaults(fn=status_sampler)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
