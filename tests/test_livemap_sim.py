"""``dclcomms sim --save``: a simulator run saved as the live map's frames (JSON lines or
a self-contained page) that rebuild, flush by flush, what the simulator reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dclcomms.sim.cli import main


def replay(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The map state after each frame, rebuilt as the page does."""
    states: list[dict[str, Any]] = []
    peers: dict[int, str] = {}
    islands: dict[str, dict[str, Any]] = {}
    for f in frames:
        if f["k"] == 1:
            p = f["peers"]
            peers = {p[i]: p[i + 1] for i in range(0, len(p), 4)}
            islands = {i["id"]: i for i in f["isl"]}
        else:
            assert f["seq"] == states[-1]["seq"] + 1
            for s in f["del"]:
                del peers[s]
            a = f["add"]
            peers.update({a[i]: a[i + 1] for i in range(0, len(a), 4)})
            for g in f["gone"]:
                del islands[g]
            islands.update({i["id"]: i for i in f["isl"]})
        assert all(s in peers for i in islands.values() for s in i["m"])
        states.append(
            {"seq": f["seq"], "peers": dict(peers), "islands": dict(islands), "c": f["counters"]}
        )
    return states


def test_saved_run_replays_what_the_simulator_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crowd.jsonl"
    args = ["--world", "crowd", "--peers", "400", "--seconds", "70", "--seed", "5"]
    assert main([*args, "--save", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    header, *lines = out.read_text().splitlines()
    assert json.loads(header) == {
        "dclcomms_map": 1,
        "world": "crowd",
        "peers": 400,
        "seed": 5,
        "policy": "threshold",
    }
    frames = [json.loads(line) for line in lines]
    assert len(frames) == summary["flushes"] == 35
    assert frames[0]["k"] == 1 and frames[30]["k"] == 1  # a key frame every 30 flushes
    assert [f["ts"] for f in frames] == [2000 * (i + 1) for i in range(35)]
    states = replay(frames)
    last = states[-1]
    assert len(last["peers"]) == summary["peers_last"] == last["c"]["peers"]
    assert len(last["islands"]) == summary["islands_last"]
    # The threshold policy's kinds colour the islands: big ones LiveKit, small ones rooms.
    trs = {i["tr"] for s in states for i in s["islands"].values()}
    assert trs <= {"livekit", "ws-room"} and "ws-room" in trs
    # The same run without --save reports the same (saving does not change the run).
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["islands_mean"] == summary["islands_mean"]


def test_saved_page_is_self_contained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.html"
    args = ["--world", "commuters", "--peers", "200", "--seconds", "10"]
    assert main([*args, "--save", str(out)]) == 0
    capsys.readouterr()
    page = out.read_text()
    assert 'id="replay-data"' in page and "<style>" in page
    assert 'src="' not in page and 'href="' not in page  # nothing to fetch
    start = page.index('id="replay-data">') + len('id="replay-data">')
    frames = json.loads(page[start : page.index("</script>", start)])
    assert len(frames) == 5 and frames[0]["k"] == 1


def test_save_to_a_missing_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nope" / "run.jsonl"
    assert main(["--peers", "10", "--seconds", "4", "--save", str(bad)]) == 2
    assert "[invalid_parameter]" in capsys.readouterr().err
    assert not bad.exists()
