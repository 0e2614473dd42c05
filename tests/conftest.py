"""Shared test fixtures: conformance data, free ports, seeded randomness."""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

DATA = Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance"


def load_conformance(name: str) -> Any:
    """One of the reference-produced vector files (copied from shared/conformance)."""
    with open(CONFORMANCE / name, encoding="utf-8") as f:
        return json.load(f)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves an aiohttp app on a free 127.0.0.1 port; the caller awaits runner.cleanup()."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Realms mount the gatekeeper, whose SQLite file defaults to $XDG_DATA_HOME/dclcomms:
    one per test run (inherited by the processes tests start), never the user's. (Not
    DCLCOMMS_DATA_DIR: that is a realm setting, which tests compare to defaults.)"""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture
def conformance() -> Any:
    return load_conformance


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A per-test seeded generator: the module's SEED plus the test name; printed for replay."""
    seed = getattr(request.module, "SEED", 0) + sum(map(ord, request.node.name))
    print(f"seed={seed}")
    return random.Random(seed)
