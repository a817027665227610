#!/usr/bin/env python3
"""The demo's client (scripts/demo.sh runs it in the client namespace).

One TCP connection to the guest's KV server: SET a counter to 0, then INCR it in
a tight loop with raw RESP, checking every reply is the previous one + 1. One
status line, redrawn in place, shows the client's view (ops/s, counter, latency
over the last second) and the replica pair's view, polled in a background
thread from `ftvmm status` on every host given with --node (the line follows
whichever host is the active primary).

The script drives it through files in --control DIR:
  DIR/kill   the wall-clock time (seconds) at which the primary's host was killed
  DIR/live   the wall-clock time at which the backup went live (from its log);
             the gap is from the kill to the first reply read after both (a reply
             the primary sent just before it died can still be read after the kill)
  DIR/stop   finish: GET the counter, write DIR/result (key=value lines), exit
Exit status: 0 if the counter stayed exact on the one connection, 1 otherwise.

Standard library only.
"""

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

KEY = b"demo:counter"
INCR = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(KEY), KEY)
TTY = sys.stdout.isatty()
ANSI = re.compile(r"\033\[[0-9;]*m")


def color(code, text):
    return "\033[%sm%s\033[0m" % (code, text) if TTY else text


class ConnectionLost(Exception):
    pass


class Resp:
    """A minimal RESP reader on one socket; `stall` is called while waiting."""

    def __init__(self, sock, stall, give_up_s):
        self.sock = sock
        self.buf = b""
        self.stall = stall
        self.give_up_s = give_up_s

    def line(self):
        waited_since = None
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                now = time.monotonic()
                waited_since = waited_since or now
                if now - waited_since > self.give_up_s:
                    raise ConnectionLost("no reply for %.0f s" % self.give_up_s)
                self.stall()
                continue
            except OSError as e:
                raise ConnectionLost(str(e))
            if not chunk:
                raise ConnectionLost("the server closed the connection")
            self.buf += chunk

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode()
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.line() + b"\r\n"
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data.decode()
        raise ConnectionLost("unexpected reply %r" % line[:80])


class StatusPoller(threading.Thread):
    """Polls `ftvmm status` on every node every `period` seconds."""

    def __init__(self, nodes, period):
        super().__init__(daemon=True)
        self.nodes = nodes  # [(name, argv)]
        self.period = period
        self.lock = threading.Lock()
        self.latest = {name: None for name, _ in nodes}
        self.rounds = 0

    def poll(self, argv):
        try:
            out = subprocess.run(argv, capture_output=True, timeout=2.0, check=True).stdout
            return json.loads(out.decode().strip().splitlines()[-1])
        except (subprocess.SubprocessError, OSError, ValueError, IndexError):
            return None

    def run(self):
        while True:
            start = time.monotonic()
            for name, argv in self.nodes:
                st = self.poll(argv)
                with self.lock:
                    self.latest[name] = st
            self.rounds += 1
            time.sleep(max(0.05, self.period - (time.monotonic() - start)))

    def active(self):
        """(name, status) of the serving replica, ("split", [...]) if two serve, or (None, latest)."""
        with self.lock:
            latest = dict(self.latest)
        serving = [
            (st.get("epoch", 0), name, st)
            for name, st in latest.items()
            if st and st.get("role") in ("primary", "live")
        ]
        if len(serving) > 1:
            return "split", serving
        if serving:
            _, name, st = serving[0]
            return name, st
        return None, latest


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100.0 * len(sorted_vals)))]


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 10000:
        return "%.0f ms" % (us / 1000.0)
    if us >= 1000:
        return "%.1f ms" % (us / 1000.0)
    return "%d µs" % us


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="10.77.0.10:6379")
    ap.add_argument("--node", action="append", default=[], metavar="NAME=COMMAND",
                    help="a host and the command that prints its `ftvmm status` JSON")
    ap.add_argument("--control", required=True, metavar="DIR")
    ap.add_argument("--poll", type=float, default=0.5, help="status poll period (s)")
    ap.add_argument("--give-up", type=float, default=15.0, help="fail after this long without a reply (s)")
    args = ap.parse_args()

    nodes = []
    for spec in args.node:
        name, _, cmd = spec.partition("=")
        nodes.append((name, shlex.split(cmd)))
    kill_file = os.path.join(args.control, "kill")
    live_file = os.path.join(args.control, "live")
    stop_file = os.path.join(args.control, "stop")
    result_file = os.path.join(args.control, "result")

    host, port = args.server.rsplit(":", 1)
    deadline = time.monotonic() + 10.0
    while True:
        try:
            sock = socket.create_connection((host, int(port)), timeout=2.0)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                sys.stderr.write("demo_client: cannot connect to %s: %s\n" % (args.server, e))
                return 1
            time.sleep(0.2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.1)  # recv wakes up to redraw while the service is stalled
    local = "%s:%d" % sock.getsockname()

    poller = StatusPoller(nodes, args.poll)
    poller.start()

    t0 = time.monotonic()
    window = collections.deque()  # (wall time of reply, latency s, value) over the last second
    st = {
        "acked": 0, "value": 0, "exact": True, "error": "", "kill": None, "live": None, "gap": None, "gap_value": None,
        "announced": False, "next_draw": 0.0,
    }

    def read_time(path):
        try:
            with open(path) as f:
                return float(f.read().strip())
        except (OSError, ValueError):
            return None

    def after_failover(wall):
        """True if a reply read at `wall` must come from the backup: after the kill and the go-live."""
        return st["kill"] is not None and st["live"] is not None and wall > max(st["kill"], st["live"])

    def check_files():
        if st["kill"] is None:
            st["kill"] = read_time(kill_file)
        if st["live"] is None:
            st["live"] = read_time(live_file)
        if st["gap"] is None:
            for wall, _, value in window:  # the first such reply may already be in the window
                if after_failover(wall):
                    st["gap"], st["gap_value"] = wall - st["kill"], value
                    break
        return os.path.exists(stop_file)

    def draw(force=False):
        now = time.monotonic()
        if not force and now < st["next_draw"]:
            return
        st["next_draw"] = now + 0.2
        horizon = time.time() - 1.0
        while window and window[0][0] < horizon:
            window.popleft()
        lats = sorted(l for _, l, _ in window)
        span = min(1.0, now - t0) or 1.0
        p50 = fmt_us(pct(lats, 50) * 1e6 if lats else None)
        p99 = fmt_us(pct(lats, 99) * 1e6 if lats else None)
        lefts = [
            "%5.1fs %5d ops/s  counter %-6d  p50 %6s  p99 %6s" % (now - t0, len(window) / span, st["value"], p50, p99),
            "%5d op/s #%-6d p50 %s p99 %s" % (len(window) / span, st["value"], p50, p99),
        ]
        name, s = poller.active()
        if name == "split":
            both = ", ".join("%s %s epoch %s" % (n, x.get("role"), x.get("epoch")) for _, n, x in s)
            rights = [color("31;1", "TWO PRIMARIES (split brain): " + both), color("31;1", "SPLIT BRAIN")]
        elif name:
            prot = color("32", "yes") if s.get("protected") else color("31;1", "NO")
            held = "%s/%s" % (fmt_us(s.get("held_p50_us")).replace(" µs", ""), fmt_us(s.get("held_p99_us")))
            # A group's followers as the serving member lists them: "followers 2 in sync", or
            # "followers 1/2 in sync" while one joins or catches up (dropped ones not counted).
            fols = [f for f in s.get("followers", []) if f.get("state") != "dropped"]
            in_sync = sum(f.get("state") == "in sync" for f in fols)
            if not fols:
                fol = "no followers"
            elif len(fols) == in_sync:
                fol = "followers %d in sync" % in_sync
            else:
                fol = "followers %d/%d in sync" % (in_sync, len(fols))
            fol = color("32" if fols and in_sync == len(fols) else "31;1", fol)
            rights = [
                "%s %s, %s, protected %s, held p50/p99 %s, lag %s exits"
                % (name, s.get("role"), fol, prot, held, s.get("lag_exits")),
                "%s %s, %s, prot %s, held %s, lag %s" % (name, s.get("role"), fol, prot, held, s.get("lag_exits")),
                "%s %s, %s, prot %s" % (name, s.get("role"), fol, prot),
                "%s %s prot %s" % (name, s.get("role"), prot),
            ]
        elif poller.rounds == 0:
            rights = ["polling ftvmm status ..."]
        else:
            parts = ["%s %s" % (n, sn.get("role") if sn else "down") for n, sn in s.items()]
            rights = [color("33", "no primary yet: " + ", ".join(parts)), color("33", "no primary yet")]
        width = shutil.get_terminal_size((120, 24)).columns - 1
        line = lefts[-1][:width]
        done = False
        for left in lefts:
            for right in rights:
                if len(ANSI.sub("", left + " │ " + right)) <= width:
                    line, done = left + " │ " + right, True
                    break
            if done:
                break
        if TTY:
            sys.stdout.write("\r" + line + "\033[K")
        else:
            sys.stdout.write(line + "\n")
            st["next_draw"] = now + 1.0
        sys.stdout.flush()

    def event(msg):
        sys.stdout.write(("\r\033[K" if TTY else "") + msg + "\n")
        sys.stdout.flush()
        st["next_draw"] = 0.0

    def stalled():
        check_files()
        draw()

    resp = Resp(sock, stalled, args.give_up)
    connection = "survived"
    try:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(KEY), KEY))
        r = resp.reply()
        if r != "OK":
            raise ConnectionLost("SET answered %r" % (r,))
        event("  client %s → %s: one TCP connection, SET %s 0, then INCR in a loop"
              % (local, args.server, KEY.decode()))
        while True:
            sent = time.perf_counter()
            sock.sendall(INCR)
            r = resp.reply()
            lat = time.perf_counter() - sent
            wall = time.time()
            if r != st["value"] + 1:
                st["exact"] = False
                st["error"] = "INCR answered %r after %d" % (r, st["value"])
                event(color("31;1", "  COUNTER NOT EXACT: " + st["error"]))
                break
            st["value"] = r
            st["acked"] += 1
            window.append((wall, lat, r))
            if st["gap"] is None and after_failover(wall):
                st["gap"], st["gap_value"] = wall - st["kill"], r
            if st["gap"] is not None and not st["announced"]:
                st["announced"] = True
                draw(force=True)
                event(color("32;1", "  the backup answers: first reply %.0f ms after the kill (live after %.0f ms), "
                                    "counter %d = %d + 1, same TCP connection"
                            % (st["gap"] * 1e3, (st["live"] - st["kill"]) * 1e3, st["gap_value"], st["gap_value"] - 1)))
            if st["acked"] % 64 == 0 and check_files():
                break
            draw()
        draw(force=True)
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(KEY), KEY))
        final = resp.reply()
        final = int(final) if final is not None else None
    except ConnectionLost as e:
        connection = "LOST (%s)" % e
        st["exact"] = False
        final = None
        event(color("31;1", "  CONNECTION LOST: %s" % e))
    sock.close()
    if TTY:
        sys.stdout.write("\n")
    with open(result_file + ".tmp", "w") as f:
        f.write("acked=%d\n" % st["acked"])
        f.write("final=%s\n" % ("" if final is None else final))
        f.write("exact=%s\n" % ("yes" if st["exact"] and final == st["acked"] else "no"))
        f.write("gap_ms=%s\n" % ("" if st["gap"] is None else "%.0f" % (st["gap"] * 1e3)))
        f.write("connection=%s\n" % connection)
        f.write("local=%s\n" % local)
        f.write("error=%s\n" % st["error"])
    os.rename(result_file + ".tmp", result_file)
    return 0 if st["exact"] and final == st["acked"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
