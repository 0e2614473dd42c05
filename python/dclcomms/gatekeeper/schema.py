"""The gatekeeper's tables (control-plane.md 1.6 and 1.7), one SQLAlchemy ``MetaData``.

Every table the gatekeeper database holds is declared on :data:`metadata`, and
every change to it is an Alembic revision in ``migrations/versions`` (one linear
chain, run at start by :func:`dclcomms.gatekeeper.storage.migrate`). Another area
that keeps its rows in this database (e.g. the server bridge's API keys) declares
its tables on the same :data:`metadata` in its own module and appends a revision
whose ``down_revision`` is the current head; see docs/gatekeeper.md "Storage".

Portable types only: timestamps are ms since the epoch (``BigInteger``), ids are
uuid text, booleans are ``Boolean``; the partial indexes carry both a SQLite and
a PostgreSQL ``WHERE``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Constraint names are stable across dialects (Alembic needs names to alter them).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ADDRESS = 42  # 0x + 40 hex, stored lowercase

scene_admin = Table(
    "scene_admin",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("place_id", String(200), nullable=False),
    Column("admin", String(ADDRESS), nullable=False),
    Column("added_by", String(ADDRESS), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Index(
        "uq_scene_admin_place_admin_active",
        "place_id",
        "admin",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
)

scene_bans = Table(
    "scene_bans",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("place_id", String(200), nullable=False),
    Column("banned_address", String(ADDRESS), nullable=False),
    Column("banned_by", String(ADDRESS), nullable=False),
    Column("banned_at", BigInteger, nullable=False),
    UniqueConstraint("place_id", "banned_address"),
)

user_bans = Table(
    "user_bans",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("banned_address", String(ADDRESS), nullable=False, index=True),
    Column("banned_by", String(200), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("custom_message", Text, nullable=True),
    Column("banned_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),  # None = permanent
    Column("lifted_at", BigInteger, nullable=True),
    Column("lifted_by", String(200), nullable=True),
    Column("banned_device_id", String(200), nullable=True),
    Index(
        "ix_user_bans_device_active",
        "banned_device_id",
        sqlite_where=text("lifted_at IS NULL"),
        postgresql_where=text("lifted_at IS NULL"),
    ),
)

user_warnings = Table(
    "user_warnings",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("warned_address", String(ADDRESS), nullable=False, index=True),
    Column("warned_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("warned_at", BigInteger, nullable=False),
)

player_connection_info = Table(
    "player_connection_info",
    metadata,
    Column("address", String(ADDRESS), primary_key=True),
    Column("ip_address", String(64), nullable=True),
    Column("device_id", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# --- revision 0002: casting and moderated scene rooms (control-plane.md 1.7) -----------

cast_links = Table(
    "cast_links",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("place_id", String(200), nullable=False, index=True),
    Column("place_name", String(200), nullable=False),
    Column("room_id", String(300), nullable=False),
    Column("is_world", Boolean, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # hex SHA-256 of the key
    Column("created_by", String(ADDRESS), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

scene_room_roles = Table(
    "scene_room_roles",
    metadata,
    Column("room_id", String(300), primary_key=True),
    Column("role", String(16), primary_key=True),  # "presenter" | "speaker"
    Column("identity", String(200), primary_key=True),
    Column("added_by", String(ADDRESS), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

scene_room_settings = Table(
    "scene_room_settings",
    metadata,
    Column("room_id", String(300), primary_key=True),
    Column("place_id", String(200), nullable=False),
    Column("moderated", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", BigInteger, nullable=False),
)

# --- revision 0004: the moderation change counter ------------------------------------
# One row (id 1) whose version triggers on user_bans, scene_bans, scene_admin,
# scene_room_roles and scene_room_settings bump on every write (any writer): running
# gatekeepers poll it to apply bans made elsewhere (e.g. `dclcomms gatekeeper ban`).

moderation_version = Table(
    "moderation_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

# The server bridge's API keys (dclcomms.bridge.keys; control-plane.md 5): the secret is
# never stored, only its SHA-256; scopes are a JSON list.
bridge_keys = Table(
    "bridge_keys",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("identity", String(80), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),  # None = never
    Column("revoked_at", BigInteger, nullable=True),
    Column("rate", Float, nullable=False),
    Column("max_bytes", Integer, nullable=False),
)

__all__ = [
    "bridge_keys",
    "cast_links",
    "metadata",
    "moderation_version",
    "player_connection_info",
    "scene_admin",
    "scene_bans",
    "scene_room_roles",
    "scene_room_settings",
    "user_bans",
    "user_warnings",
]
