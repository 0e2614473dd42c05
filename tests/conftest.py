"""Shared test fixtures (conformance data, seeded randomness); helpers live in tests/helpers/."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.common import load_conformance
from tests.helpers.nats_fixtures import reap_spawned


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


@pytest.fixture(autouse=True)
def _spawned_processes() -> Iterator[None]:
    """Every ``dclcomms`` process a test spawned is stopped and its pipes closed after it."""
    yield
    reap_spawned()


@pytest.fixture
def conformance() -> Any:
    return load_conformance


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A per-test seeded generator: the module's SEED plus the test name; printed for replay."""
    seed = getattr(request.module, "SEED", 0) + sum(map(ord, request.node.name))
    print(f"seed={seed}")
    return random.Random(seed)
