# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

from collections.abc import Sequence
from typing import Any

__version__: str

# --- codec -------------------------------------------------------------------

def codec_encode(type_name: str, message: dict[str, Any]) -> bytes: ...
def codec_decode(
    type_name: str, data: bytes, including_defaults: bool = False
) -> dict[str, Any]: ...
def codec_message_types() -> list[str]: ...
def codec_descriptor_set() -> bytes: ...
def codec_encode_island_changed(
    island_id: str,
    conn_str: str,
    from_island_id: str | None,
    peers: Sequence[tuple[str, tuple[float, float, float]]],
    server_packet: bool = False,
) -> bytes: ...
def codec_decode_heartbeat(data: bytes) -> dict[str, Any]: ...

# --- auth --------------------------------------------------------------------

# --- archipelago -------------------------------------------------------------

# --- ws ----------------------------------------------------------------------
