"""`make lint` as part of the test command: formatting and lint never drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked(*patterns: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="no git")
def test_clang_format_clean() -> None:
    files = _tracked("cpp/*.cpp", "cpp/*.hpp", "bench/*.cpp")
    out = subprocess.run(
        ["clang-format", "--dry-run", "--Werror", *files], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-4000:]


def test_ruff_clean() -> None:
    for args in (["check"], ["format", "--check"]):
        out = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "python", "tests", "bench"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
