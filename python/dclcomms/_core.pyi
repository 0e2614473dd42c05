# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

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

class ArchipelagoEngine:
    def __init__(
        self,
        join_distance: float,
        leave_distance: float,
        max_island_size: int,
        id_prefix: str,
        id_epoch: str = "",
    ) -> None: ...
    def update(
        self, peer_id: str, x: float, y: float, z: float, op: int, preferred: str, now_ms: int
    ) -> None: ...
    def update_many(
        self,
        peer_ids: list[str],
        positions: npt.NDArray[np.float32],
        ops: list[int] | None,
        preferred: list[str] | None,
        now_ms: int,
    ) -> None: ...
    def disconnect(self, peer_id: str) -> bool: ...
    def disconnect_many(self, peer_ids: list[str]) -> int: ...
    def expire(self, now_ms: int, timeout_ms: int) -> int: ...
    def flush(
        self,
    ) -> tuple[list[str], list[Literal["changed", "left"]], list[str], list[str | None]]: ...
    def islands(
        self,
    ) -> list[tuple[str, list[str], tuple[float, float, float], float, int]]: ...
    def island_of(self, peer_id: str) -> str | None: ...
    @property
    def peer_count(self) -> int: ...
    @property
    def island_count(self) -> int: ...
    def snapshot(self) -> dict[str, Any]: ...
    def last_flush_stats(self) -> dict[str, int]: ...

# --- ws ----------------------------------------------------------------------

class WsServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        io_threads: int,
        auth_threads: int,
        max_frame_bytes: int,
        connector: bool,
        connector_handshake_timeout_ms: int,
        heartbeat_max_per_s: int,
        connector_max_queued_bytes: int,
        rooms: bool,
        rooms_handshake_timeout_ms: int,
        rooms_max_users: int,
        rooms_soft_limit_bytes: int,
        rooms_hard_limit_bytes: int,
        ws_room_secret: str | None,
        ws_room_require_token: bool,
        http_timeout_ms: int,
        max_pending_frames: int,
        idle_timeout_ms: int,
    ) -> None: ...
    def start(self) -> int: ...
    def stop(self) -> None: ...
    @property
    def port(self) -> int: ...
    def fileno(self) -> int: ...
    def poll(self, max_events: int) -> list[tuple[object, ...]]: ...
    def respond(
        self, request_id: int, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None: ...
    def send_island_changed(
        self,
        address: str,
        island_id: str,
        conn_str: str,
        from_island_id: str | None,
        peers: list[tuple[str, tuple[float, float, float]]],
    ) -> None: ...
    def send_join_island(self, address: str, island_id: str, peer_id: str) -> None: ...
    def send_left_island(self, address: str, island_id: str, peer_id: str) -> None: ...
    def kick(self, address: str, code: int, reason: str) -> None: ...
    def set_deny_list(self, addresses: list[str]) -> None: ...
    def stats(self) -> dict[str, dict[str, object]]: ...
