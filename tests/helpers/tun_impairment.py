"""A userspace packet impairment stage on a TUN device: delay, loss, partition.

Used by :mod:`tests.helpers.netfaults` where the kernel has no ``sch_netem``. Run inside
the router namespace (``ip netns exec R python tun_impairment.py DEV SEED``) after the
persistent TUN device ``DEV`` was made there (``ip tuntap add DEV mode tun``); policy routes
send every packet crossing the router into ``DEV``, and this process writes each one back
(the kernel then forwards it on its way) after the delay, or drops it:

* ``delay_ms``: every packet is held this long (FIFO, so order is kept, as netem's
  constant delay keeps it);
* ``loss``: each packet is dropped with this probability (``random.Random(SEED)``);
* ``partition``: every packet is dropped.

Packets are IP datagrams of real TCP connections, so a dropped one is retransmitted by
TCP, as on a lossy link. Commands arrive one per line on stdin, each answered by one JSON
line on stdout: ``set delay_ms=200 loss=0.05 partition=0`` (any subset) answers the
settings; ``stats`` answers the counters; EOF on stdin ends the process.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> int:
    dev, seed = sys.argv[1], int(sys.argv[2])
    fd = open_tun(dev)
    rng = random.Random(seed)
    settings: dict[str, float] = {"delay_ms": 0.0, "loss": 0.0, "partition": 0.0}
    counts = {"packets": 0, "forwarded": 0, "dropped_loss": 0, "dropped_partition": 0}
    held: collections.deque[tuple[float, bytes]] = collections.deque()
    stdin = sys.stdin.fileno()
    line = b""
    print(json.dumps({"ready": dev}), flush=True)
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            try:
                os.write(fd, held[0][1])
            except BlockingIOError:
                break
            held.popleft()
            counts["forwarded"] += 1
        timeout = max(0.0, held[0][0] - now) if held else None
        ready, _, _ = select.select([fd, stdin], [], [], timeout)
        if fd in ready:
            for _ in range(256):  # drain what is queued, then look at the clock again
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                counts["packets"] += 1
                if settings["partition"]:
                    counts["dropped_partition"] += 1
                elif settings["loss"] and rng.random() < settings["loss"]:
                    counts["dropped_loss"] += 1
                else:
                    held.append((time.monotonic() + settings["delay_ms"] / 1000.0, pkt))
        if stdin in ready:
            chunk = os.read(stdin, 4096)
            if not chunk:
                return 0
            line += chunk
            while b"\n" in line:
                cmd, line = line.split(b"\n", 1)
                words = cmd.decode().split()
                if not words:
                    continue
                if words[0] == "set":
                    for w in words[1:]:
                        k, v = w.split("=", 1)
                        if k not in settings:
                            raise SystemExit(f"unknown setting {k}")
                        settings[k] = float(v)
                    print(json.dumps(settings), flush=True)
                elif words[0] == "stats":
                    print(json.dumps(dict(counts, held=len(held))), flush=True)
                else:
                    raise SystemExit(f"unknown command {words[0]}")


if __name__ == "__main__":
    sys.exit(main())
