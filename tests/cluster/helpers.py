"""Helpers of the cluster tests: free loopback ports, and whether a process is still running."""

from __future__ import annotations

import os
import socket
import time


def alive(pid: int) -> bool:
    """`pid` exists and is not a zombie (a zombie waiting for a parent that is not us is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def free_ports(count: int, consecutive: int = 1) -> list[int]:
    """`count` free loopback ports; the first `consecutive` of them in a row."""
    for base in range(20000 + (time.time_ns() // 1000) % 20000, 60000, 7):
        wanted = list(range(base, base + consecutive)) + [base + 100 + i for i in range(count - consecutive)]
        socks = []
        try:
            for port in wanted:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return wanted
    raise RuntimeError("no free ports")
