"""Import paths of the earlier flat layout keep working and give the same objects."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import dclcomms
from dclcomms import _moved
from dclcomms.config import RealmConfig
from dclcomms.pubsub import InProcessPubSub
from dclcomms.realm import Realm

PACKAGE = Path(dclcomms.__file__).parent

# Written out here (not read from dclcomms._moved) so that dropping a path from the
# table fails this test.
OLD_MODULES = {
    "dclcomms._auth_chain": "dclcomms.auth.chain",
    "dclcomms._auth_identity": "dclcomms.auth.identity",
    "dclcomms._auth_signed_fetch": "dclcomms.auth.signed_fetch",
    "dclcomms.archipelago_reference": "dclcomms.archipelago.reference",
    "dclcomms.archipelago_scenarios": "dclcomms.archipelago.scenarios",
    "dclcomms.realm.core": "dclcomms.archipelago.core",
    "dclcomms.bus": "dclcomms.pubsub",
    "dclcomms.natsbus": "dclcomms.nats.pubsub",
    "dclcomms.subjects": "dclcomms.nats.subjects",
    "dclcomms.nodes": "dclcomms.nats.nodes",
    "dclcomms.processes": "dclcomms.nats.processes",
}

RENAMED = [
    ("dclcomms.bus", "Bus", "dclcomms.pubsub", "PubSub"),
    ("dclcomms.bus", "InProcessBus", "dclcomms.pubsub", "InProcessPubSub"),
    ("dclcomms.natsbus", "NatsBus", "dclcomms.nats.pubsub", "NatsPubSub"),
    ("dclcomms.natsbus", "BusError", "dclcomms.errors", "PubSubError"),
    ("dclcomms.processes", "BusError", "dclcomms.errors", "PubSubError"),
    ("dclcomms", "BusError", "dclcomms.errors", "PubSubError"),
    ("dclcomms.errors", "BusError", "dclcomms.errors", "PubSubError"),
    ("dclcomms.realm", "ArchipelagoCore", "dclcomms.archipelago.core", "ArchipelagoCore"),
    ("dclcomms.realm", "TickReport", "dclcomms.archipelago.core", "TickReport"),
    ("dclcomms.realm", "setup_logging", "dclcomms.logs", "setup_logging"),
    ("dclcomms.realm.app", "setup_logging", "dclcomms.logs", "setup_logging"),
    ("dclcomms.realm.app", "JsonFormatter", "dclcomms.logs", "JsonFormatter"),
    ("dclcomms.archipelago", "ArchipelagoCore", "dclcomms.archipelago.core", "ArchipelagoCore"),
    *[
        (old, name, "dclcomms.realm.cli", name)
        for old in ("dclcomms.processes", "dclcomms.nats.processes")
        for name in ("connector_main", "core_main", "stats_main", "realm_nats_main")
    ],
]


def test_the_table_is_the_list_above() -> None:
    assert _moved.MODULES == OLD_MODULES


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_old_module_gives_every_object_of_the_new_one(old: str) -> None:
    new = importlib.import_module(OLD_MODULES[old])
    mod = importlib.import_module(old)
    assert sys.modules[old] is mod
    assert not (PACKAGE / (old.removeprefix("dclcomms.").replace(".", "/") + ".py")).exists()
    names = list(new.__all__)
    assert names, f"{new.__name__} has no __all__"
    for name in names:
        assert getattr(mod, name) is getattr(new, name), f"{old}.{name}"
    # private helpers too (code written against the old modules used some)
    for name in [n for n in vars(new) if n.startswith("_") and not n.startswith("__")]:
        assert getattr(mod, name) is getattr(new, name), f"{old}.{name}"
    with pytest.raises(AttributeError):
        _ = mod.no_such_name_anywhere


@pytest.mark.parametrize(("old", "name", "new", "new_name"), RENAMED)
def test_renamed_names(old: str, name: str, new: str, new_name: str) -> None:
    got = getattr(importlib.import_module(old), name)
    assert got is getattr(importlib.import_module(new), new_name)


def test_old_paths_in_a_fresh_interpreter() -> None:
    """Old paths first, before anything imported the new modules."""
    code = (
        "from dclcomms.bus import InProcessBus, Heartbeat\n"
        "import dclcomms.natsbus, dclcomms.processes, dclcomms.realm.core as rc\n"
        "from dclcomms._auth_identity import Identity\n"
        "from dclcomms.archipelago_scenarios import replay\n"
        "from dclcomms.subjects import *\n"
        "import dclcomms.pubsub, dclcomms.nats.processes, dclcomms.auth\n"
        "assert InProcessBus is dclcomms.pubsub.InProcessPubSub\n"
        "assert dclcomms.natsbus.NatsBus is dclcomms.nats.pubsub.NatsPubSub\n"
        "assert dclcomms.processes.CoreService is dclcomms.nats.processes.CoreService\n"
        "assert rc.ArchipelagoCore is dclcomms.realm.ArchipelagoCore\n"
        "assert Identity is dclcomms.auth.Identity\n"
        "assert check_address('0x' + '0' * 40)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_realm_takes_the_old_bus_keyword() -> None:
    ps = InProcessPubSub()
    assert Realm(RealmConfig(port=0), bus=ps).pubsub is ps
    assert Realm(RealmConfig(port=0), pubsub=ps).pubsub is ps
    with pytest.raises(TypeError):
        Realm(RealmConfig(port=0), pubsub=ps, bus=InProcessPubSub())


def _imports(path: Path) -> set[str]:
    """Every dclcomms module a source file imports (at any depth: lazy imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("dclcomms")}


@pytest.mark.parametrize("lower", ["nats", "archipelago", "config", "auth"])
def test_lower_layers_do_not_reach_into_the_realm(lower: str) -> None:
    """The realm composes the layers below it; none of them imports it (not even lazily)."""
    files = sorted((PACKAGE / lower).glob("*.py"))
    assert files
    for f in files:
        up = {m for m in _imports(f) if m == "dclcomms.realm" or m.startswith("dclcomms.realm.")}
        assert not up, f"{f.relative_to(PACKAGE)} imports {sorted(up)}"
