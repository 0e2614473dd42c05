"""``dclcomms sim``: JSON summary, CSV output, typed errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dclcomms.sim.cli import main


@pytest.mark.parametrize("world", ["mixed", "waypoint", "commuters", "crowd"])
def test_sim_command_prints_a_summary(world: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--world", world, "--peers", "400", "--seconds", "10", "--seed", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["flushes"] == 5 and doc["simulated_s"] == 10.0
    assert doc["islands_last"] >= 1 and 0 < doc["peers_last"] <= 400
    assert doc["total_cost"] > 0 and doc["currency"] == "USD"


def test_same_seed_same_summary_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--peers", "300", "--seconds", "8", "--policy", "hysteresis", "--threshold", "5"]
    assert main([*args, "--csv", str(tmp_path / "a.csv")]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main([*args, "--csv", str(tmp_path / "b.csv")]) == 0
    b = json.loads(capsys.readouterr().out)
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b
    frame = pd.read_csv(tmp_path / "a.csv")
    assert frame["t_s"].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert frame.equals(pd.read_csv(tmp_path / "b.csv"))


@pytest.mark.parametrize(
    "args",
    [
        ["--peers", "0"],
        ["--seconds", "-1"],
        ["--join-distance", "90"],  # above the leave distance
        ["--flush", "0"],
        ["--policy", "hysteresis", "--threshold", "0"],
        ["--threshold", "-5"],
    ],
)
def test_invalid_parameters_exit_2_with_the_code(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--peers", "50", *args]) == 2
    err = capsys.readouterr().err
    assert "error [invalid_parameter]" in err


def test_registered_in_the_dclcomms_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "sim", "--peers", "100", "--seconds", "4"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["flushes"] == 2
