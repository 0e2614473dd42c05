"""``dclcomms bots``: a crowd of real clients against a realm, for load and soak tests.

Each bot is a :class:`~dclcomms.client.CommunicationsDirector` with a real
secp256k1 identity (``Identity.generate(seed + i)``) whose position comes from a
shared, vectorised :mod:`dclcomms.sim.mobility` model stepped once per second.
Bots heartbeat once a second, follow their ``island_changed`` swaps and
exchange RFC-4 packets through their island transport: a ``position`` every
``--position-interval`` seconds (unreliable) and a ``chat`` every
``--chat-interval`` seconds (reliable). Every packet received is decoded as an
RFC-4 ``Packet``.

On P2P islands (a realm whose policy hands out ``p2p:`` strings, e.g. ``dclcomms
realm --policy p2p``) the bots build the WebRTC mesh among themselves, signalling
through the realm's ``/bus``; ``--ice-server`` (STUN/TURN URLs) and ``--ice-host``
(local addresses for host candidates) configure ICE. ``--transport p2p`` (or
``ws-room``) also checks that every bot ends on that transport (``wrong_transport``
errors otherwise); the summary's ``transports`` counts the bots by island
transport, and ``p2p`` sums the mesh counters.

Scene rooms (ADR-204): ``--scenes N`` lays a grid of N scenes (as square as it
goes: 16 = 4 x 4) of ``--scene-block`` x ``--scene-block`` parcels from parcel 0,0
and makes the bots walk inside it (random waypoint; ``--mobility`` is not used).
Every bot holds the scene room of the scene it stands in beside its island
transport, swapping it through the gatekeeper (``--gatekeeper``, default: the
realm's own) as it crosses scene boundaries, and sends an RFC-4 ``scene`` packet
through it every ``--scene-interval`` seconds, tagged with the scene of the room it sends
through. A packet received in a room of another scene is a ``cross_scene_packet``
error. The summary's ``scenes`` counts joins, swaps (a room left for another),
kicks, failures, the scene rooms held at the end and the scene packets.

The run is bounded: ``--seconds`` of traffic after every bot has connected,
under a hard deadline of ``seconds + connect budget + 30 s``. A JSON summary goes
to stdout; exit status 1 when any protocol error (undecodable packet, failed
handshake, lost transport or connector session, missed deadline) occurred.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dclcomms import codec
from dclcomms.auth import Identity
from dclcomms.client import (
    CommunicationsDirector,
    Disconnection,
    Message,
    P2PAdapter,
    P2POptions,
    SceneGrid,
    SceneKicked,
)
from dclcomms.errors import ConfigError, DecodeError, Error
from dclcomms.sim.mobility import Bounds, MobilityModel, RandomWaypoint, parcel_center

MODELS = ("waypoint", "plaza", "commuters", "crowd", "mixed")
TRANSPORTS = ("auto", "p2p", "ws-room", "livekit", "offline")


def build_model(name: str, count: int) -> MobilityModel:
    """``plaza``: random waypoint over a 10 x 10 parcel square (bots meet, islands
    change often); the others are the simulator's worlds (Genesis City)."""
    if name == "plaza":
        x0, z0 = parcel_center(-5, -5)
        return RandomWaypoint(
            count, group_size=1, bounds=Bounds(x0, x0 + 160.0, z0, z0 + 160.0), pause_s=(0.0, 5.0)
        )
    if name == "waypoint":  # always online: sessions would turn bots off and on
        return RandomWaypoint(count, group_size=4)
    from dclcomms.sim.cli import build_world

    if name in MODELS:
        return build_world(name, count)
    raise ConfigError(f"unknown mobility model {name!r}; one of {MODELS}", code="invalid_parameter")


@dataclass
class Tally:
    """Counters of one run (the JSON summary)."""

    connected: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    scene_sent: int = 0
    scene_received: int = 0
    scene_kicks: list[str] = field(default_factory=list)
    disconnections: int = 0  # connector sessions lost and being restored (reconnect on)
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, err: BaseException) -> None:
        code = err.code if isinstance(err, Error) else type(err).__name__
        self.errors[code] += 1


class Bot:
    """One client: a director plus its traffic loop (kept light: 200 share one loop)."""

    def __init__(
        self,
        index: int,
        seed: int,
        realm: str,
        model: MobilityModel,
        tally: Tally,
        p2p: P2POptions | None = None,
        open_bus_early: bool = False,
        scenes: SceneGrid | None = None,
        gatekeeper_url: str | None = None,
        reconnect: bool = True,
    ) -> None:
        self.index = index
        self.identity = Identity.generate(seed + index)
        self.model = model
        self.tally = tally
        self.director = CommunicationsDirector(
            realm,
            self.identity,
            position=self.position,
            p2p_options=p2p,
            open_bus_early=open_bus_early,
            scenes=scenes,
            gatekeeper_url=gatekeeper_url,
            reconnect=reconnect,
        )
        self.director.on("message", self.on_message)
        self.director.on("scene_message", self.on_scene_message)
        self.director.on("scene_kicked", self.on_scene_kicked)
        self.director.on("error", tally.error)
        self.director.on("DISCONNECTION", self.on_disconnection)
        self.stopping = False

    def position(self) -> tuple[float, float, float]:
        p = self.model.positions[self.index]
        return (float(p[0]), float(p[1]), float(p[2]))

    def on_message(self, message: Message) -> None:
        try:
            packet = codec.decode(codec.RFC4_PACKET, message.data)
        except DecodeError as e:
            self.tally.error(e)
            return
        if not packet:
            self.tally.errors["empty_packet"] += 1
            return
        self.tally.messages_received += 1

    def on_scene_message(self, message: Message) -> None:
        """A packet from our scene room: it must be a ``scene`` packet sent through a
        room of the same scene (the sender's tag) as the room it arrived in."""
        try:
            packet = codec.decode(codec.RFC4_PACKET, message.data)
        except DecodeError as e:
            self.tally.error(e)
            return
        scene = packet.get("scene")
        if not isinstance(scene, dict):
            self.tally.errors["unexpected_scene_packet"] += 1
            return
        if scene.get("sceneId") != self.director.scene_id:
            self.tally.errors["cross_scene_packet"] += 1
            return
        self.tally.scene_received += 1

    def on_scene_kicked(self, kick: SceneKicked) -> None:
        self.tally.scene_kicks.append(self.identity.address.lower())

    def on_disconnection(self, gone: Disconnection) -> None:
        if self.stopping:
            return
        if self.director.reconnect and not gone.kicked:  # the director comes back by itself
            self.tally.disconnections += 1
        else:  # the connector closed on us for good
            self.tally.errors["connector_lost" if gone.error is None else "connector_closed"] += 1

    async def traffic(self, stop_at: float, position_s: float, chat_s: float, phase: float) -> None:
        await asyncio.sleep(phase)  # spread the bots over the interval
        next_chat = time.monotonic() + chat_s * phase / max(position_s, 1e-9)
        index = 0
        while time.monotonic() < stop_at:
            x, y, z = self.position()
            pos = {"index": index, "positionX": x, "positionY": y, "positionZ": z, "rotationW": 1.0}
            index += 1
            await self._send({"position": pos}, reliable=False)
            now = time.monotonic()
            if now >= next_chat:
                next_chat = now + chat_s
                chat = {"message": f"bot {self.index} says hi", "timestamp": time.time() * 1000}
                await self._send({"chat": chat}, reliable=True)
            await asyncio.sleep(position_s)

    async def _send(self, packet: dict[str, Any], *, reliable: bool) -> None:
        data = codec.encode(codec.RFC4_PACKET, {**packet, "protocolVersion": 100})
        try:
            if await self.director.send(data, reliable=reliable):
                self.tally.messages_sent += 1
        except Error as e:  # the transport went away between the check and the send
            if e.code != "not_connected":
                self.tally.error(e)

    async def scene_traffic(self, stop_at: float, scene_s: float, phase: float) -> None:
        """A ``scene`` packet through the scene room every ``scene_s`` seconds."""
        await asyncio.sleep(phase)
        index = 0
        while time.monotonic() < stop_at:
            index += 1
            await self._send_scene(index)
            await asyncio.sleep(scene_s)

    async def _send_scene(self, index: int) -> None:
        # Read the room and its scene together (no await between): the tag is the
        # scene of the room the packet goes through.
        adapter, scene = self.director.scene_adapter, self.director.scene_id
        if adapter is None or not adapter.connected or scene is None:
            return
        body = {"sceneId": scene, "data": f"{self.index}:{index}".encode()}
        data = codec.encode(codec.RFC4_PACKET, {"scene": body, "protocolVersion": 100})
        try:
            await adapter.send(data, reliable=False)
        except Error as e:  # left the room between the check and the send
            if e.code != "not_connected":
                self.tally.error(e)
            return
        self.tally.scene_sent += 1


async def _mobility(model: MobilityModel, rng: np.random.Generator, stop: asyncio.Event) -> None:
    t = 0.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            model.step(t, 1.0, rng)
            t += 1.0


async def run_bots(
    realm: str,
    count: int,
    *,
    mobility: str = "waypoint",
    seconds: float = 20.0,
    seed: int = 1,
    position_interval_s: float = 1.0,
    chat_interval_s: float = 10.0,
    max_connecting: int = 50,
    progress: bool = False,
    transport: str = "auto",
    ice_servers: Sequence[str] = (),
    ice_hosts: Sequence[str] | None = None,
    scenes: int = 0,
    scene_block: int = 2,
    scene_interval_s: float = 1.0,
    gatekeeper_url: str | None = None,
    reconnect: bool = True,
) -> dict[str, Any]:
    """Run ``count`` bots for ``seconds`` and return the summary (see module docs)."""
    if count < 1 or seconds <= 0 or position_interval_s <= 0 or chat_interval_s <= 0:
        raise ConfigError("count, seconds and intervals must be positive", code="invalid_parameter")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"unknown transport {transport!r}; one of {TRANSPORTS}", code="invalid_parameter"
        )
    if scenes < 0 or scene_block < 1 or scene_interval_s <= 0:
        raise ConfigError(
            "scenes must be >= 0, scene_block >= 1 and scene_interval > 0",
            code="invalid_parameter",
        )
    rng = np.random.default_rng(seed)
    grid = SceneGrid.square(scenes, block=scene_block) if scenes else None
    if grid is not None:
        mobility = "scene-grid"
        model: MobilityModel = RandomWaypoint(
            count, group_size=1, bounds=grid.bounds(), pause_s=(0.0, 3.0)
        )
    else:
        model = build_model(mobility, count)
    model.reset(rng)
    tally = Tally()
    base = seed * 1_000_003
    bots = [
        Bot(
            i,
            base,
            realm,
            model,
            tally,
            P2POptions(
                ice_servers=tuple(ice_servers),
                host_addresses=tuple(ice_hosts) if ice_hosts else None,
                seed=base + i,
            ),
            open_bus_early=transport == "p2p",  # listening for offers before any island
            scenes=grid,
            gatekeeper_url=gatekeeper_url,
            reconnect=reconnect,
        )
        for i in range(count)
    ]
    stop = asyncio.Event()
    mover = asyncio.create_task(_mobility(model, rng, stop))
    gate = asyncio.Semaphore(max_connecting)
    bar = _progress(progress, count + int(seconds))
    started = time.monotonic()

    async def connect(bot: Bot) -> bool:
        async with gate:
            try:
                await bot.director.start()
            except Error as e:
                tally.error(e)
                return False
        tally.connected += 1
        bar.update(1)
        return True

    live: list[Bot] = []
    try:
        ok = await asyncio.gather(*(connect(b) for b in bots))
        live = [b for b, good in zip(bots, ok, strict=True) if good]
        connect_s = time.monotonic() - started
        stop_at = time.monotonic() + seconds
        traffic = [
            asyncio.create_task(
                b.traffic(
                    stop_at,
                    position_interval_s,
                    chat_interval_s,
                    position_interval_s * i / max(len(live), 1),
                )
            )
            for i, b in enumerate(live)
        ]
        if grid is not None:
            traffic += [
                asyncio.create_task(
                    b.scene_traffic(stop_at, scene_interval_s, scene_interval_s * i / len(live))
                )
                for i, b in enumerate(live)
            ]
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(1.0, max(stop_at - time.monotonic(), 0.0)))
            bar.update(1)
        await asyncio.gather(*traffic)
        on = Counter(_protocol(b) for b in live)
        if transport != "auto":
            wrong = sum(n for p, n in on.items() if p != transport)
            if wrong:
                tally.errors["wrong_transport"] += wrong
        mesh = _p2p_summary([b.director.adapter for b in live])
        scene_summary = _scene_summary(grid, live, tally)  # before the directors stop
    finally:
        for b in bots:
            b.stopping = True
        stop.set()
        await mover
        await asyncio.gather(*(b.director.stop() for b in bots), return_exceptions=True)
        bar.close()
    return {
        "realm": realm,
        "bots": count,
        "connected": tally.connected,
        "mobility": mobility,
        "seed": seed,
        "seconds": seconds,
        "connect_s": round(connect_s, 3),
        "elapsed_s": round(time.monotonic() - started, 3),
        "handshakes": {
            "connector": sum(b.director.handshakes for b in bots),
            "transport": sum(b.director.transport_handshakes for b in bots),
        },
        "island_changes": sum(b.director.island_changes for b in bots),
        "disconnections": tally.disconnections,
        "reconnects": sum(b.director.reconnects for b in bots),
        "islands": len({b.director.island_id for b in live if b.director.island_id}),
        "messages_sent": tally.messages_sent,
        "messages_received": tally.messages_received,
        "transports": dict(sorted(on.items())),
        "p2p": mesh,
        "scenes": scene_summary,
        "protocol_errors": sum(tally.errors.values()),
        "errors_by_code": dict(sorted(tally.errors.items())),
    }


def _scene_summary(grid: SceneGrid | None, live: Sequence[Bot], tally: Tally) -> dict[str, Any]:
    if grid is None:
        return {}
    ds = [b.director for b in live]
    join_s = sorted(x for d in ds for x in d.scene_join_s)
    return {
        "grid": f"{grid.columns}x{grid.rows}",
        "block": grid.block,
        "joins": sum(d.scene_joins for d in ds),
        "swaps": sum(d.scene_swaps for d in ds),
        "kicks": sum(d.scene_kicks for d in ds),
        "kicked": sorted(set(tally.scene_kicks)),
        "failures": sum(d.scene_failures for d in ds),
        "losses": sum(d.scene_losses for d in ds),
        "in_room": sum(1 for d in ds if d.scene_adapter is not None),
        "rooms": len({d.scene_room for d in ds if d.scene_room}),
        "join_s_p50": round(join_s[len(join_s) // 2], 3) if join_s else None,
        "join_s_max": round(join_s[-1], 3) if join_s else None,
        "packets_sent": tally.scene_sent,
        "packets_received": tally.scene_received,
    }


def _protocol(bot: Bot) -> str:
    adapter = bot.director.adapter
    return adapter.protocol if adapter is not None and adapter.protocol else "none"


def _p2p_summary(adapters: Sequence[Any]) -> dict[str, Any]:
    """Mesh counters summed over the bots on P2P islands."""
    p2p = [a for a in adapters if isinstance(a, P2PAdapter)]
    totals: Counter[str] = Counter()
    for a in p2p:
        for k, v in a.stats().items():
            if isinstance(v, int) and k not in ("members", "links"):
                totals[k] += v
    return {
        "bots": len(p2p),
        "mesh_open": sum(a.mesh_open for a in p2p),
        "links": sum(len(a.open_links) for a in p2p),
        **dict(sorted(totals.items())),
    }


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:  # tqdm is optional (the "sim" extra)
        return _NoBar()
    return tqdm(total=total, unit="step", desc="bots", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    """``dclcomms bots --realm URL --count N --mobility MODEL --seconds S``."""
    p = argparse.ArgumentParser(prog="dclcomms bots", description=__doc__.split("\n\n")[0])
    p.add_argument("--realm", required=True, help="realm base URL (serves /about)")
    p.add_argument("--count", type=int, default=10, help="number of bots (default 10)")
    p.add_argument("--mobility", choices=MODELS, default="waypoint", help="mobility model")
    p.add_argument("--seconds", type=float, default=20.0, help="traffic duration after connecting")
    p.add_argument("--seed", type=int, default=1, help="identities and mobility seed")
    p.add_argument("--position-interval", type=float, default=1.0, help="seconds between positions")
    p.add_argument("--chat-interval", type=float, default=10.0, help="seconds between chats")
    p.add_argument("--max-connecting", type=int, default=50, help="concurrent handshakes")
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="island transport every bot must end on (default auto: whatever the realm gives)",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server for P2P islands (stun:host:port; repeatable)",
    )
    p.add_argument(
        "--ice-host",
        action="append",
        default=None,
        metavar="ADDR",
        help="local address for P2P host candidates (repeatable; default every interface "
        "but loopback)",
    )
    p.add_argument(
        "--scenes",
        type=int,
        default=0,
        metavar="N",
        help="walk a grid of N scenes (16 = 4x4) holding scene rooms (default 0: none)",
    )
    p.add_argument(
        "--scene-block", type=int, default=2, metavar="K", help="parcels per scene side (2)"
    )
    p.add_argument(
        "--scene-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between scene packets through the scene room (1.0)",
    )
    p.add_argument(
        "--gatekeeper",
        default=None,
        metavar="URL",
        help="gatekeeper base URL (default: advertised by /about, else the realm)",
    )
    p.add_argument(
        "--no-reconnect",
        action="store_true",
        help="a bot whose connector session ends stays gone (default: it reconnects with "
        "exponential back-off and jitter, re-handshakes and rejoins an island)",
    )
    args = p.parse_args(list(argv))
    if args.scenes < 0 or args.scene_block < 1 or args.scene_interval <= 0:
        print(
            "dclcomms bots: --scenes must be >= 0, --scene-block >= 1, --scene-interval > 0",
            file=sys.stderr,
        )
        return 2
    if args.count < 1 or args.seconds <= 0 or args.max_connecting < 1:
        print(
            "dclcomms bots: --count, --seconds and --max-connecting must be positive",
            file=sys.stderr,
        )
        return 2
    # Hard deadline: connecting gets 0.1 s per bot (at least 30 s) plus a 30 s margin.
    deadline = args.seconds + max(30.0, 0.1 * args.count) + 30.0
    coro = run_bots(
        args.realm,
        args.count,
        mobility=args.mobility,
        seconds=args.seconds,
        seed=args.seed,
        position_interval_s=args.position_interval,
        chat_interval_s=args.chat_interval,
        max_connecting=args.max_connecting,
        progress=sys.stderr.isatty(),
        transport=args.transport,
        ice_servers=args.ice_server,
        ice_hosts=args.ice_host,
        scenes=args.scenes,
        scene_block=args.scene_block,
        scene_interval_s=args.scene_interval,
        gatekeeper_url=args.gatekeeper,
        reconnect=not args.no_reconnect,
    )
    try:
        summary = asyncio.run(asyncio.wait_for(coro, deadline))
    except TimeoutError:
        print(json.dumps({"error": "deadline exceeded", "deadline_s": deadline}))
        return 1
    except ConfigError as e:
        print(f"dclcomms bots: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 1 if summary["protocol_errors"] or summary["connected"] < args.count else 0
