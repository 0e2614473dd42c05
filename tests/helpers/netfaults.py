"""Network faults between a realm and its NATS: network namespaces and an impaired router.

Topology (every name and host-side address unique to the run)::

    host (tests) --veth-- [realm ns] --veth-- [router ns] --veth-- [nats ns] --veth-- host
                            dclcomms realm     impairment            nats-server

The realm reaches NATS only through the router namespace, whose two links carry the
impairment: ``delay_ms`` added to every packet in each direction, ``loss`` (each packet
dropped with that probability, in each direction) and a partition (every packet dropped,
silently, as on a cut link: TCP retransmits, nothing is refused). The host reaches the
realm (clients) and NATS (observers) on links of their own that are never impaired.

Two ways to impair, chosen at :meth:`FaultNet.up` and reported as :attr:`FaultNet.mode`:

* ``"netem"``: ``tc qdisc ... netem delay D loss L`` on both router links when the kernel
  has ``sch_netem``; a partition is ``loss 100%``.
* ``"tun"``: the kernel has no netem (this machine's does not): policy routes send every
  packet entering the router into a TUN device, where :mod:`tests.helpers.tun_impairment`
  (seeded) holds each one for ``delay_ms``, drops it with probability ``loss`` or during a
  partition, and writes the rest back for the kernel to forward.

:func:`unavailable` says why namespaces cannot be made here (not root, no iproute2, no
``ip netns``, no TUN device without netem); tests skip with that message. Everything
:meth:`FaultNet.up` makes, :meth:`FaultNet.down` removes (processes it started, then the
namespaces, which takes their links with them); namespaces left by a run that was killed
before its teardown are swept by the next :meth:`FaultNet.up` (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or "/usr/sbin/ip"
FORWARDER = Path(__file__).with_name("tun_impairment.py")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root or in a privileged container)"
    if not Path(IP).exists():
        return "iproute2 ('ip') is not installed"
    probe = f"nfprobe{os.getpid()}"
    out = _run(IP, "netns", "add", probe, check=False)
    if out.returncode != 0:
        return f"cannot make a network namespace: {out.stderr.strip()}"
    try:
        veth = _run(
            IP, "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        if veth.returncode != 0:
            return f"cannot make a veth pair: {veth.stderr.strip()}"
        if not _netem_works(probe, "p0") and not os.path.exists("/dev/net/tun"):
            return "the kernel has neither sch_netem nor a TUN device (/dev/net/tun)"
    finally:
        _run(IP, "netns", "del", probe, check=False)
    return None


def _netem_works(ns: str, dev: str) -> bool:
    tc = shutil.which("tc")
    if tc is None:
        return False
    add = _run(IP, "netns", "exec", ns, tc, "qdisc", "add", "dev", dev, "root", "netem",
               "delay", "1ms", check=False)  # fmt: skip
    if add.returncode != 0:
        return False
    _run(IP, "netns", "exec", ns, tc, "qdisc", "del", "dev", dev, "root", check=False)
    return True


def sweep_stale() -> list[str]:
    """Removes namespaces (and so their links) left by a run whose process is gone (a test
    killed before its teardown); returns their names."""
    gone = []
    for line in _run(IP, "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"nf(\d+)-(realm|rtr|nats)", name)
        if m is None or Path(f"/proc/{m.group(1)}").exists():
            continue
        _run(IP, "netns", "del", name, check=False)
        gone.append(name)
    for line in _run(IP, "-o", "link", "show").stdout.splitlines():
        m = re.search(r": (nf(\d+)h[rn])@", line)
        if m is not None and not Path(f"/proc/{m.group(2)}").exists():
            _run(IP, "link", "del", m.group(1), check=False)
            gone.append(m.group(1))
    return gone


def _used_subnets() -> str:
    return _run(IP, "-o", "-4", "addr", "show").stdout


class FaultNet:
    """The namespaces, links and impairment of one test (see the module doc)."""

    def __init__(self, seed: int = 1, *, force_mode: str | None = None) -> None:
        tag = f"nf{os.getpid()}"  # <= 9 characters: interface names stay under 16
        self.tag = tag
        self.realm_ns, self.router_ns, self.nats_ns = f"{tag}-realm", f"{tag}-rtr", f"{tag}-nats"
        self.seed = seed
        self.force_mode = force_mode
        self.mode = ""
        # router links (inside namespaces only): realm 10.77.1.2 <-> .1, nats 10.77.2.2 <-> .1
        self.realm_ip, self.nats_ip = "10.77.1.2", "10.77.2.2"
        self.realm_host_ip = ""  # the realm on its host link (clients)
        self.nats_host_ip = ""  # NATS on its host link (observers)
        self._made_ns: list[str] = []
        self._forwarder: subprocess.Popen[str] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self.settings = {"delay_ms": 0.0, "loss": 0.0, "partition": False}

    # --- setup / teardown ---------------------------------------------------------------

    def _ns(self, ns: str, *args: str) -> None:
        _run(IP, "-n", ns, *args)

    def _sysctl(self, ns: str, *kv: str) -> None:
        _run(IP, "netns", "exec", ns, "sysctl", "-q", "-w", *kv)

    def up(self) -> FaultNet:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        sweep_stale()
        for ns in (self.realm_ns, self.router_ns, self.nats_ns):
            _run(IP, "netns", "add", ns)
            self._made_ns.append(ns)
            self._ns(ns, "link", "set", "lo", "up")
        t = self.tag
        # realm <-> router <-> nats
        self._veth(f"{t}rr", self.realm_ns, f"{t}vr", self.router_ns)
        self._veth(f"{t}nn", self.nats_ns, f"{t}vn", self.router_ns)
        self._ns(self.realm_ns, "addr", "add", f"{self.realm_ip}/24", "dev", f"{t}rr")
        self._ns(self.router_ns, "addr", "add", "10.77.1.1/24", "dev", f"{t}vr")
        self._ns(self.router_ns, "addr", "add", "10.77.2.1/24", "dev", f"{t}vn")
        self._ns(self.nats_ns, "addr", "add", f"{self.nats_ip}/24", "dev", f"{t}nn")
        self._ns(self.realm_ns, "route", "add", "10.77.2.0/24", "via", "10.77.1.1")
        self._ns(self.nats_ns, "route", "add", "10.77.1.0/24", "via", "10.77.2.1")
        self._sysctl(self.router_ns, "net.ipv4.ip_forward=1")
        # host links: two /30s free on this host
        used = _used_subnets()
        k = next(
            k
            for k in [(os.getpid() + i) % 250 + 1 for i in range(250)]
            if f"10.213.{k}." not in used and f"10.214.{k}." not in used
        )
        self._veth(f"{t}hr", None, f"{t}rh", self.realm_ns)
        self._veth(f"{t}hn", None, f"{t}nh", self.nats_ns)
        _run(IP, "addr", "add", f"10.213.{k}.1/30", "dev", f"{t}hr")
        _run(IP, "addr", "add", f"10.214.{k}.1/30", "dev", f"{t}hn")
        self._ns(self.realm_ns, "addr", "add", f"10.213.{k}.2/30", "dev", f"{t}rh")
        self._ns(self.nats_ns, "addr", "add", f"10.214.{k}.2/30", "dev", f"{t}nh")
        self.realm_host_ip, self.nats_host_ip = f"10.213.{k}.2", f"10.214.{k}.2"
        # the impairment
        mode = self.force_mode or ("netem" if _netem_works(self.router_ns, f"{t}vr") else "tun")
        if mode == "tun":
            self._tun_up()
        self.mode = mode

    def _veth(self, a: str, a_ns: str | None, b: str, b_ns: str) -> None:
        _run(IP, "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns)
        if a_ns is not None:
            _run(IP, "link", "set", a, "netns", a_ns)
            self._ns(a_ns, "link", "set", a, "up")
        else:
            _run(IP, "link", "set", a, "up")
        self._ns(b_ns, "link", "set", b, "up")

    def _tun_up(self) -> None:
        t, r = self.tag, self.router_ns
        dev = f"{t}tn"
        self._ns(r, "tuntap", "add", "dev", dev, "mode", "tun")
        self._ns(r, "link", "set", dev, "up")
        # forwarded packets re-enter from the TUN device: no reverse-path filtering there
        for iface in ("all", "default", dev, f"{t}vr", f"{t}vn"):
            self._sysctl(r, f"net.ipv4.conf.{iface}.rp_filter=0")
        self._ns(r, "route", "add", "default", "dev", dev, "table", "100")
        self._ns(r, "rule", "add", "iif", f"{t}vr", "table", "100")
        self._ns(r, "rule", "add", "iif", f"{t}vn", "table", "100")
        self._forwarder = subprocess.Popen(
            [IP, "netns", "exec", r, sys.executable, str(FORWARDER), dev, str(self.seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._answer()
        if ready != {"ready": dev}:
            raise RuntimeError(f"impairment stage did not start: {ready}")

    def _answer(self) -> Any:
        f = self._forwarder
        assert f is not None and f.stdout is not None
        line = f.stdout.readline()
        if not line:
            raise RuntimeError(f"impairment stage exited ({f.poll()})")
        return json.loads(line)

    def _command(self, text: str) -> Any:
        f = self._forwarder
        assert f is not None and f.stdin is not None
        f.stdin.write(text + "\n")
        f.stdin.flush()
        return self._answer()

    def down(self) -> None:
        """Stops what :meth:`up` and :meth:`run` started, removes the namespaces."""
        for p in [*self._procs, *([self._forwarder] if self._forwarder else [])]:
            _stop(p)
        self._procs.clear()
        self._forwarder = None
        for ns in reversed(self._made_ns):
            _run(IP, "netns", "del", ns, check=False)
        self._made_ns.clear()
        # host ends of the links go with their peers; make sure
        for dev in (f"{self.tag}hr", f"{self.tag}hn"):
            _run(IP, "link", "del", dev, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces or host links of this run that still exist (none after down())."""
        names = _run(IP, "netns", "list").stdout
        links = _run(IP, "-o", "link", "show").stdout
        out = [ns for ns in (self.realm_ns, self.router_ns, self.nats_ns) if ns in names]
        out += [d for d in (f"{self.tag}hr", f"{self.tag}hn") if f" {d}@" in links]
        return out

    # --- processes ------------------------------------------------------------------

    def run(
        self, ns: str, args: Sequence[str], *, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        """``args`` started inside namespace ``ns`` (stopped by :meth:`down` if still running;
        ``ip netns exec`` execs it, so the pid is the program's own)."""
        p: subprocess.Popen[Any] = subprocess.Popen([IP, "netns", "exec", ns, *args], env=env, **kw)
        self._procs.append(p)
        return p

    # --- the impairment -------------------------------------------------------------

    def impair(self, delay_ms: float = 0.0, loss: float = 0.0) -> None:
        """Each direction between the realm and NATS: ``delay_ms`` more, ``loss`` dropped."""
        self.settings.update(delay_ms=float(delay_ms), loss=float(loss))
        self._apply()

    def partition(self) -> None:
        """Every packet between the realm and NATS dropped (both directions), silently."""
        self.settings["partition"] = True
        self._apply()

    def heal(self) -> None:
        """The partition ends; the delay and loss set by :meth:`impair` stay."""
        self.settings["partition"] = False
        self._apply()

    def _apply(self) -> None:
        s = self.settings
        if self.mode == "tun":
            cut = int(bool(s["partition"]))
            self._command(f"set delay_ms={s['delay_ms']} loss={s['loss']} partition={cut}")
            return
        loss = 100.0 if s["partition"] else s["loss"] * 100.0
        for dev in (f"{self.tag}vr", f"{self.tag}vn"):
            args = ["tc", "qdisc", "replace", "dev", dev, "root", "netem"]
            args += ["delay", f"{s['delay_ms']}ms", "loss", f"{loss}%"]
            _run(IP, "netns", "exec", self.router_ns, *args)

    def stats(self) -> dict[str, int]:
        """Packets seen / forwarded / dropped by the impairment (netem: from tc -s)."""
        if self.mode == "tun":
            out: dict[str, int] = self._command("stats")
            return out
        sent = dropped = 0
        for dev in (f"{self.tag}vr", f"{self.tag}vn"):
            text = _run(
                IP, "netns", "exec", self.router_ns, "tc", "-s", "qdisc", "show", "dev", dev
            ).stdout
            words = text.split()
            if "Sent" in words:
                i = words.index("Sent")
                sent += int(words[i + 3])
            if "dropped" in words:
                dropped += int(words[words.index("dropped") + 1].rstrip(","))
        return {"packets": sent + dropped, "forwarded": sent, "dropped": dropped}


def _stop(p: subprocess.Popen[Any], grace: float = 10.0) -> None:
    try:
        _end(p, grace)
    finally:
        for pipe in (p.stdin, p.stdout, p.stderr):  # unclosed: a ResourceWarning at GC
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()


def _end(p: subprocess.Popen[Any], grace: float) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(OSError, ValueError):
        if p.stdin is not None:
            p.stdin.close()  # the impairment stage ends at EOF
    try:
        p.wait(0.5 if p.stdin is not None else 0)
        return
    except subprocess.TimeoutExpired:
        pass
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(grace)


@contextlib.contextmanager
def fault_net(seed: int = 1) -> Iterator[FaultNet]:
    net = FaultNet(seed).up()
    try:
        yield net
    finally:
        net.down()
    left = net.leftovers()
    assert not left, f"left behind: {left}"


__all__ = ["FaultNet", "fault_net", "sweep_stale", "unavailable"]
