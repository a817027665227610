#!/usr/bin/env python3
"""What makes a stock Linux client resend a request that was lost at failover?

Run by scripts/probe-client-retransmit.sh, which builds three namespaces (server, router,
client) and removes them afterwards. A Linux server stands in for the guest (it negotiates
SACK as the guest's smoltcp does). The client sends small requests on one TCP connection
(TCP_NODELAY), one at a time. For each trial the router stops forwarding (net.ipv4.ip_forward=0)
just before the client's request, so the request is lost exactly as one sent to a dead primary
is; after DROP seconds forwarding resumes and the server's side injects the frames of one
variant, built from the server's last segment on the connection (what a new primary's host
could build from the guest's last output): then we time until the reply arrives, i.e. until
the client resent the request.

    usage: retransmit_probe.py VARIANT TRIALS DROP_S
    prints one JSON line per trial: {"variant", "drop_ms", "reply_ms"}
"""
import ctypes
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

VARIANT, TRIALS, DROP_S = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
PREFIX = os.environ.get("PROBE_PREFIX", "ftvmm-probe-")
NS_S, NS_C, NS_R = PREFIX + "s", PREFIX + "c", PREFIX + "r"
SERVER = ("10.99.1.1", 6379)
libc = ctypes.CDLL(None, use_errno=True)


def setns(name):
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, 0) != 0:
        raise OSError(ctypes.get_errno(), f"setns {name}")
    os.close(fd)


def forwarding(on):
    subprocess.run(["ip", "netns", "exec", NS_R, "sysctl", "-qw", f"net.ipv4.ip_forward={1 if on else 0}"], check=True)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def tcp_of(frame):
    ihl = (frame[14] & 15) * 4
    return 14 + ihl, ihl


def build(frame, flags=0x10, win=None, opts=None):
    """A copy of the server's segment `frame` (Ethernet), without payload, with `flags`,
    window `win` and TCP options `opts` (default: the segment's own)."""
    t, ihl = tcp_of(frame)
    ip = bytearray(frame[14:t])
    doff = (frame[t + 12] >> 4) * 4
    tcp = bytearray(frame[t:t + 20])
    if opts is None:
        opts = frame[t + 20:t + doff]
    opts = opts + b"\x01" * ((4 - len(opts) % 4) % 4)
    tcp[12] = ((20 + len(opts)) // 4) << 4
    tcp[13] = flags
    if win is not None:
        tcp[14:16] = struct.pack("!H", win)
    tcp[16:18] = b"\0\0"
    seg = bytes(tcp) + opts
    pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, 6, len(seg))
    seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    ip[2:4] = struct.pack("!H", ihl + len(seg))
    ip[10:12] = b"\0\0"
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    return frame[:14] + bytes(ip) + seg


def seq_ack(frame):
    t, _ = tcp_of(frame)
    return struct.unpack("!II", frame[t + 4:t + 12])


def icmp_unreachable(frame):
    """ICMP host unreachable to the client, quoting its segment at snd_una (= the server's ack):
    RFC 6069 lets a sender that backed off its RTO take the backoff back and resend."""
    t, ihl = tcp_of(frame)
    src, dst = frame[26:30], frame[30:34]
    _, ack = seq_ack(frame)
    quoted_ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, dst, src))
    quoted_ip[10:12] = struct.pack("!H", csum(bytes(quoted_ip)))
    quoted = bytes(quoted_ip) + frame[t + 2:t + 4] + frame[t:t + 2] + struct.pack("!I", ack)
    icmp = bytearray(struct.pack("!BBHI", 3, 1, 0, 0) + quoted)
    icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
    outer = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst))
    outer[10:12] = struct.pack("!H", csum(bytes(outer)))
    return frame[:14] + bytes(outer) + bytes(icmp)


def nudge(frame):
    if VARIANT == "none":
        return []
    if VARIANT == "dupack":  # three duplicate ACKs, as the guest last acked
        return [build(frame)] * 3
    if VARIANT == "dsack":  # three duplicate ACKs carrying a D-SACK block below the ack
        _, ack = seq_ack(frame)
        sack = b"\x01\x01\x05\x0a" + struct.pack("!II", (ack - 1) & 0xFFFFFFFF, ack)
        return [build(frame, opts=sack)] * 3
    if VARIANT == "window":  # zero window, then the window again (a window update)
        return [build(frame, win=0), build(frame)]
    if VARIANT == "resend":  # the server's last segment again, payload and all
        return [frame]
    if VARIANT == "icmp":
        return [icmp_unreachable(frame)]
    raise SystemExit(f"unknown variant {VARIANT}")


last = {}


def sniff(ready):
    setns(NS_S)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("veth-s", 0))
    ready.set()
    while True:
        f, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING and f[12:14] == b"\x08\x00" and f[23] == 6:
            last["frame"] = f


def serve(ready):
    setns(NS_S)
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(SERVER)
    lst.listen()
    ready.set()
    c, _ = lst.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(100)
        if not d:
            return
        c.sendall(b"+OK\r\n")


def inject(frames):
    setns(NS_S)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("veth-s", 0))
    for f in frames:
        s.send(f)
    s.close()


def main():
    for target in (sniff, serve):
        ready = threading.Event()
        threading.Thread(target=target, args=(ready,), daemon=True).start()
        ready.wait()
    setns(NS_C)
    s = socket.create_connection(SERVER)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    for _ in range(TRIALS):
        for _ in range(300):  # a steady round trip, as before a failover
            s.sendall(b"PING\r\n")
            s.recv(100)
        time.sleep(0.05)
        frame = last["frame"]
        forwarding(False)
        t0 = time.perf_counter()
        s.sendall(b"INCR\r\n")
        time.sleep(DROP_S)
        forwarding(True)
        t1 = time.perf_counter()
        threading.Thread(target=inject, args=(nudge(frame),)).start()
        s.recv(100)
        t2 = time.perf_counter()
        print(json.dumps({"variant": VARIANT, "drop_ms": round((t1 - t0) * 1000, 1), "reply_ms": round((t2 - t0) * 1000, 1)}), flush=True)


main()
