# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

from collections.abc import Callable, Sequence
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

def keccak256(data: bytes) -> bytes: ...
def personal_message_hash(message: bytes) -> bytes: ...
def recover_address(message: bytes, signature: str) -> str: ...
def to_checksum_address(address: str) -> str: ...
def verify_auth_chain(
    auth_chain_json: bytes,
    expected_payload: bytes,
    now_ms: int,
    provider: Callable[[str, str], str] | None = None,
) -> tuple[bool, str | None, str | None, int | None, str | None, str]: ...
def verify_many(
    items: list[tuple[bytes, bytes]], now_ms: int, threads: int
) -> list[tuple[bool, str | None, str | None, int | None, str | None, str]]: ...
def random_challenge() -> str: ...
def is_valid_private_key(private_key: bytes) -> bool: ...
def address_of(private_key: bytes) -> str: ...
def sign_personal(private_key: bytes, message: bytes) -> str: ...
def eip1271_call_data(hash: bytes, signature: bytes) -> str: ...
def parse_timestamp_ms(text: str) -> int | None: ...
def format_iso8601_ms(ms: int) -> str: ...
def jwt_encode(
    claims: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None
) -> str: ...
def jwt_decode(
    token: str,
    secret: bytes,
    now_s: int,
    leeway_s: int,
    issuer: str | None,
    require_exp: bool,
) -> dict[str, Any]: ...
def livekit_token(
    api_key: str,
    api_secret: bytes,
    identity: str,
    room: str,
    ttl_s: int,
    now_s: int,
    name: str | None,
    metadata: str | None,
    grants: dict[str, Any] | None,
) -> str: ...

# --- archipelago -------------------------------------------------------------

# --- ws ----------------------------------------------------------------------
