"""``dclcomms bots`` against a real realm: in-process for the small runs, a subprocess for 200."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from dclcomms.bots import build_model, main, run_bots
from dclcomms.config import RealmConfig
from dclcomms.errors import ConfigError
from dclcomms.realm import Realm
from tests.helpers.common import free_port, realm_cli


def realm_config(**kw: Any) -> RealmConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "flush_interval_s": 0.2,
        "log_format": "text",
        "log_level": "WARNING",
    }
    base.update(kw)
    return RealmConfig(**base)


@pytest.mark.slow
def test_bots_exchange_packets_and_change_islands_in_process() -> None:
    async def body() -> dict[str, Any]:
        async with Realm(realm_config()) as realm:
            return await run_bots(
                realm.url,
                12,
                mobility="plaza",
                seconds=4.0,
                seed=7,
                position_interval_s=0.25,
                chat_interval_s=1.0,
            )

    summary = asyncio.run(asyncio.wait_for(body(), 60))
    assert summary["protocol_errors"] == 0, summary
    assert summary["connected"] == 12
    assert summary["handshakes"]["connector"] == 12
    assert summary["handshakes"]["transport"] >= 12
    assert summary["island_changes"] >= 12
    assert summary["messages_sent"] > 0 and summary["messages_received"] > 0


def test_bots_unknown_model_and_bad_arguments() -> None:
    with pytest.raises(ConfigError) as e:
        build_model("teleport", 3)
    assert e.value.code == "invalid_parameter"
    assert main(["--realm", "http://127.0.0.1:1", "--count", "0"]) == 2


def test_bots_against_an_unreachable_realm_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--realm", url, "--count", "2", "--seconds", "0.5"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["connected"] == 0
    assert summary["errors_by_code"] == {"about_failed": 2}


@pytest.mark.slow
def test_two_hundred_bots_against_a_realm_subprocess() -> None:
    with realm_cli() as url:
        bots = subprocess.run(
            [
                *(sys.executable, "-m", "dclcomms", "bots", "--realm", url, "--count", "200"),
                *("--mobility", "waypoint", "--seconds", "20", "--seed", "3"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        summary = json.loads(bots.stdout)
        assert bots.returncode == 0, (summary, bots.stderr[-2000:])
        assert summary["protocol_errors"] == 0 and summary["connected"] == 200
        assert summary["handshakes"]["connector"] == 200
        assert summary["handshakes"]["transport"] >= 200
        assert summary["messages_received"] > 0
        assert summary["elapsed_s"] < 20 + 60


@pytest.mark.slow
def test_bots_on_a_p2p_realm_build_the_mesh_and_exchange_packets() -> None:
    """``dclcomms realm --policy p2p`` + ``dclcomms bots --transport p2p``: two processes."""
    with realm_cli("--policy", "p2p", "--flush-interval-s", "0.2") as url:
        bots = subprocess.run(
            [
                *(sys.executable, "-m", "dclcomms", "bots", "--realm", url, "--count", "6"),
                *("--mobility", "plaza", "--seconds", "6", "--seed", "5", "--transport", "p2p"),
                *("--position-interval", "0.1", "--chat-interval", "1", "--ice-host", "127.0.0.1"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        summary = json.loads(bots.stdout)
        assert bots.returncode == 0, (summary, bots.stderr[-2000:])
        assert summary["protocol_errors"] == 0 and summary["connected"] == 6
        assert summary["transports"] == {"p2p": 6}
        mesh = summary["p2p"]
        assert mesh["bots"] == 6 and mesh["links"] >= 2 and mesh["links_opened"] >= 2
        assert mesh["sent_offer"] >= 1 and mesh["sent_answer"] >= 1
        assert summary["messages_received"] > 0 and mesh["bytes_sent"] > 0


@pytest.mark.slow
def test_bots_report_a_wrong_transport() -> None:
    async def body() -> dict[str, Any]:
        async with Realm(realm_config()) as realm:  # rooms, not P2P
            return await run_bots(realm.url, 2, mobility="plaza", seconds=1.0, transport="p2p")

    summary = asyncio.run(asyncio.wait_for(body(), 60))
    assert summary["transports"] == {"ws-room": 2}
    assert summary["errors_by_code"] == {"wrong_transport": 2}
    with pytest.raises(ConfigError):
        asyncio.run(run_bots("http://127.0.0.1:1", 1, transport="pigeon"))
