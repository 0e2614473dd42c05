"""Shared test fixtures: conformance data, free ports, seeded randomness."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def conformance() -> Any:
    return load_conformance
