"""The bridge's processes for tests: ``dclcomms bridge keys`` and servers started on a
free port (``dclcomms bridge serve``, ``dclcomms rooms``), stopped by the test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.common import free_port


def cli(*args: str, data_dir: Path) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "bridge", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def start(
    *args: str, expect: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dclcomms",
        *args,
        "--port",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert expect in line.decode(), line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, port


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        return await proc.wait()
