# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

__version__: str

# --- codec -------------------------------------------------------------------

# --- auth --------------------------------------------------------------------

# --- archipelago -------------------------------------------------------------

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
