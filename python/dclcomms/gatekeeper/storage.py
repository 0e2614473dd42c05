"""The gatekeeper database: SQLite by default, PostgreSQL in production.

::

    store = Store.open(data_dir="/var/lib/dclcomms")          # SQLite file, WAL
    store = Store.open("postgresql://user@db/gatekeeper")       # psycopg 3
    store.add_scene_ban("place-1", "0xabc...", banned_by="0xdef...")

:func:`Store.open` runs the Alembic revisions of ``migrations/versions`` up to
the head before returning (``migrate=False`` to only check), holding a lock so
that processes starting together migrate once (a file lock beside a SQLite
file, ``pg_advisory_lock`` on PostgreSQL). The methods are synchronous and
thread-safe (one connection per call from the engine's pool): async callers run
them with ``asyncio.to_thread``. Addresses are stored lowercase; timestamps are
ms since the epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from dclcomms.errors import ConfigError
from dclcomms.gatekeeper import schema as t

log = logging.getLogger("dclcomms.gatekeeper.storage")

MIGRATIONS = Path(__file__).parent / "migrations"
DB_FILE = "gatekeeper.sqlite3"
_PG_LOCK_KEY = 0x6463_6C67_6B01  # pg_advisory_lock key of the migration lock ("dclgk")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def default_data_dir() -> Path:
    """``$DCLCOMMS_DATA_DIR``, else ``$XDG_DATA_HOME/dclcomms``, else
    ``~/.local/share/dclcomms``."""
    env = os.environ.get("DCLCOMMS_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg or Path.home() / ".local" / "share") / "dclcomms"


def database_url(
    database: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> str:
    """The SQLAlchemy URL: ``database`` as given (``postgresql://`` means psycopg 3), else
    the SQLite file ``gatekeeper.sqlite3`` under ``data_dir`` (created if missing)."""
    if database:
        if database.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + database.split("://", 1)[1]
        if database.startswith(("sqlite:", "postgresql+")):
            return database
        raise ConfigError(
            f"database must be postgresql://... or sqlite://..., got {redact(database)!r}",
            code="bad_value",
        )
    d = Path(data_dir) if data_dir else default_data_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create data directory {d}: {e}", code="bad_value") from None
    return f"sqlite:///{(d / DB_FILE).resolve()}"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and errors)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def create_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if memory:
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


class _Checkouts:
    """How many of an engine's connections are checked out now, from any thread."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._cond = threading.Condition()
        sa.event.listen(engine, "checkout", self._out)
        sa.event.listen(engine, "checkin", self._in)

    def _out(self, *_: Any) -> None:
        with self._cond:
            self.count += 1

    def _in(self, *_: Any) -> None:
        with self._cond:
            self.count -= 1
            self._cond.notify_all()

    def wait_none(self, timeout_s: float) -> bool:
        """Until none is checked out (True), or ``timeout_s`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count <= 0, timeout_s)


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    """The newest revision of ``migrations/versions``."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    db = engine.url.database
    if not db or db == ":memory:":
        yield
        return
    with open(db + ".migrate-lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade (or, to an older revision, downgrade) the database; returns the revision
    it ends at. Safe to run from several processes at once."""
    from alembic import command

    with _migration_lock(engine):
        before = current_revision(engine)
        with engine.begin() as conn:
            cfg = _alembic_config(conn)
            target = head_revision() if revision == "head" else revision
            order = _order()
            if before is not None and (
                target == "base"
                or (
                    target in order
                    and before in order
                    and order.index(target) < order.index(before)
                )
            ):
                command.downgrade(cfg, target)
            else:
                command.upgrade(cfg, target)
    return current_revision(engine)


_migrate = migrate


def _order() -> list[str]:
    """Revisions oldest first."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


class StorageError(ConfigError):
    """The database is unusable (not migrated, unreachable): ``code`` says why."""


@dataclass(frozen=True)
class PlatformBan:
    id: str
    banned_address: str
    banned_by: str
    reason: str
    custom_message: str | None
    banned_at: int
    expires_at: int | None
    lifted_at: int | None = None
    lifted_by: str | None = None
    banned_device_id: str | None = None

    def active(self, now: int) -> bool:
        return self.lifted_at is None and (self.expires_at is None or self.expires_at > now)

    def to_json(self) -> dict[str, Any]:
        """The reference's ban shape (camelCase, ms timestamps)."""
        return {
            "id": self.id,
            "bannedAddress": self.banned_address,
            "bannedBy": self.banned_by,
            "reason": self.reason,
            "customMessage": self.custom_message,
            "bannedAt": self.banned_at,
            "expiresAt": self.expires_at,
            "liftedAt": self.lifted_at,
            "liftedBy": self.lifted_by,
        }


@dataclass(frozen=True)
class SceneBan:
    place_id: str
    banned_address: str
    banned_by: str
    banned_at: int


@dataclass(frozen=True)
class SceneAdmin:
    place_id: str
    admin: str
    added_by: str
    created_at: int


@dataclass(frozen=True)
class Warning:
    warned_address: str
    warned_by: str
    reason: str
    warned_at: int


@dataclass(frozen=True)
class Admission:
    platform_ban: PlatformBan | None
    scene_banned: bool
    moderated: bool
    roles: frozenset[str]


@dataclass(frozen=True)
class Snapshot:
    """Active platform bans (address -> expiry or None), scene bans (place, address),
    moderated rooms and scene-room roles, read in one go; ``version``: the
    moderation change counter read before them (:meth:`Store.change_version`)."""

    platform: dict[str, int | None]
    scene: set[tuple[str, str]]
    moderated: set[str]
    roles: dict[tuple[str, str], frozenset[str]]
    version: int = 0
    #: active scene admins (place, address): not read by token requests; a change of
    #: them (another process) refreshes the rooms' metadata
    admins: frozenset[tuple[str, str]] = frozenset()

    def admission(self, address: str, place_id: str, room: str, now: int) -> Admission:
        a = address.lower()
        ban = None
        if a in self.platform:
            exp = self.platform[a]
            if exp is None or exp > now:
                ban = PlatformBan("", a, "", "", None, 0, exp)
        return Admission(
            ban,
            (place_id, a) in self.scene,
            room in self.moderated,
            self.roles.get((room, a), frozenset()),
        )


@dataclass(frozen=True)
class CastLink:
    id: str
    place_id: str
    place_name: str
    room_id: str
    is_world: bool
    key_hash: str
    created_by: str
    created_at: int
    expires_at: int
    revoked_at: int | None


class Conflict(Exception):
    """The row exists already (e.g. an active platform ban)."""


def _version(c: Connection) -> int:
    """The change counter (0 when its row is missing: then only periodic reloads apply
    other processes' writes)."""
    v = c.execute(
        sa.select(t.moderation_version.c.version).where(t.moderation_version.c.id == 1)
    ).scalar()
    return int(v or 0)


def _ban(row: Any) -> PlatformBan:
    return PlatformBan(**{k: row._mapping[k] for k in PlatformBan.__dataclass_fields__})


class Store:
    """The gatekeeper's rows. Build with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._checkouts = _Checkouts(engine)

    @classmethod
    def open(
        cls,
        database: str | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        migrate: bool = True,
    ) -> Store:
        """Connect and bring the schema to the head revision (``migrate=False``: raise
        :class:`StorageError` ``not_migrated`` when it is not there)."""
        url = database_url(database, data_dir)
        engine = create_engine(url)
        try:
            if migrate:
                _migrate(engine)
            rev = current_revision(engine)
        except sa.exc.OperationalError as e:
            engine.dispose()
            raise StorageError(
                f"cannot open database {redact(url)}: {e.orig}", code="database_unavailable"
            ) from None
        if rev != head_revision():
            engine.dispose()
            raise StorageError(
                f"database {redact(url)} is at revision {rev}, this version needs "
                f"{head_revision()}: run 'dclcomms gatekeeper migrate'",
                code="not_migrated",
            )
        return cls(engine)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self, wait_s: float = 30.0) -> None:
        """Close the database connections, once no call holds one. A call may still run in
        a worker thread after its async caller was cancelled (``asyncio.to_thread`` cannot
        stop the thread; a realm stopping cancels its tasks): it is waited for, up to
        ``wait_s``, since a connection checked in after ``dispose()`` would stay open until
        garbage collected."""
        if not self._checkouts.wait_none(wait_s):
            log.warning(
                "closing the gatekeeper database while calls still hold connections",
                extra={"connections": self._checkouts.count},
            )
        self.engine.dispose()

    # --- platform bans and warnings --------------------------------------------------

    def platform_ban(self, address: str, *, now: int | None = None) -> PlatformBan | None:
        """The active ban of address (not lifted, not expired), if any."""
        now = now_ms() if now is None else now
        q = (
            sa.select(t.user_bans)
            .where(
                t.user_bans.c.banned_address == address.lower(),
                t.user_bans.c.lifted_at.is_(None),
                sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
            )
            .order_by(t.user_bans.c.banned_at.desc())
            .limit(1)
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return None if row is None else _ban(row)

    def add_platform_ban(
        self,
        address: str,
        *,
        banned_by: str,
        reason: str = "",
        duration_ms: int | None = None,
        custom_message: str | None = None,
        device_id: str | None = None,
        now: int | None = None,
    ) -> PlatformBan:
        """Bans address (``duration_ms`` None = until lifted); :class:`Conflict` if banned."""
        now = now_ms() if now is None else now
        address = address.lower()
        with self.engine.begin() as c:
            if self._active_ban(c, address, now):
                raise Conflict(f"{address} is already banned")
            ban = PlatformBan(
                id=str(uuid.uuid4()),
                banned_address=address,
                banned_by=banned_by.lower(),
                reason=reason,
                custom_message=custom_message,
                banned_at=now,
                expires_at=None if duration_ms is None else now + duration_ms,
                banned_device_id=device_id,
            )
            c.execute(sa.insert(t.user_bans).values(**ban.__dict__))
        return ban

    def _active_ban(self, c: Connection, address: str, now: int) -> bool:
        q = sa.select(t.user_bans.c.id).where(
            t.user_bans.c.banned_address == address,
            t.user_bans.c.lifted_at.is_(None),
            sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
        )
        return c.execute(q.limit(1)).first() is not None

    def lift_platform_ban(self, address: str, *, lifted_by: str, now: int | None = None) -> bool:
        """Lifts every active ban of address; False when there was none."""
        now = now_ms() if now is None else now
        with self.engine.begin() as c:
            r = c.execute(
                sa.update(t.user_bans)
                .where(
                    t.user_bans.c.banned_address == address.lower(),
                    t.user_bans.c.lifted_at.is_(None),
                    sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
                )
                .values(lifted_at=now, lifted_by=lifted_by.lower())
            )
        return bool(r.rowcount)

    def platform_bans(self, *, now: int | None = None) -> list[PlatformBan]:
        """Every active platform ban, newest first."""
        now = now_ms() if now is None else now
        q = (
            sa.select(t.user_bans)
            .where(
                t.user_bans.c.lifted_at.is_(None),
                sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
            )
            .order_by(t.user_bans.c.banned_at.desc())
        )
        with self.engine.connect() as c:
            return [_ban(r) for r in c.execute(q)]

    def add_warning(
        self, address: str, *, warned_by: str, reason: str, now: int | None = None
    ) -> Warning:
        w = Warning(address.lower(), warned_by.lower(), reason, now_ms() if now is None else now)
        with self.engine.begin() as c:
            c.execute(sa.insert(t.user_warnings).values(id=str(uuid.uuid4()), **w.__dict__))
        return w

    def warnings(self, address: str) -> list[Warning]:
        q = (
            sa.select(t.user_warnings)
            .where(t.user_warnings.c.warned_address == address.lower())
            .order_by(t.user_warnings.c.warned_at)
        )
        with self.engine.connect() as c:
            return [
                Warning(r.warned_address, r.warned_by, r.reason, r.warned_at) for r in c.execute(q)
            ]

    # --- scene bans -----------------------------------------------------------------

    def is_scene_banned(self, place_id: str, address: str) -> bool:
        q = sa.select(t.scene_bans.c.id).where(
            t.scene_bans.c.place_id == place_id,
            t.scene_bans.c.banned_address == address.lower(),
        )
        with self.engine.connect() as c:
            return c.execute(q.limit(1)).first() is not None

    def add_scene_ban(
        self, place_id: str, address: str, *, banned_by: str, now: int | None = None
    ) -> bool:
        """False when address was banned from the place already (scene bans never expire)."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(t.scene_bans).values(
                        id=str(uuid.uuid4()),
                        place_id=place_id,
                        banned_address=address.lower(),
                        banned_by=banned_by.lower(),
                        banned_at=now_ms() if now is None else now,
                    )
                )
        except IntegrityError:
            return False
        return True

    def remove_scene_ban(self, place_id: str, address: str) -> bool:
        with self.engine.begin() as c:
            r = c.execute(
                sa.delete(t.scene_bans).where(
                    t.scene_bans.c.place_id == place_id,
                    t.scene_bans.c.banned_address == address.lower(),
                )
            )
        return bool(r.rowcount)

    def scene_bans(
        self, place_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[SceneBan], int]:
        """(bans of the place, newest first, paged; total count)."""
        where = t.scene_bans.c.place_id == place_id
        q = (
            sa.select(t.scene_bans)
            .where(where)
            .order_by(t.scene_bans.c.banned_at.desc(), t.scene_bans.c.banned_address)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as c:
            rows = [
                SceneBan(r.place_id, r.banned_address, r.banned_by, r.banned_at)
                for r in c.execute(q)
            ]
            total = c.execute(sa.select(sa.func.count()).where(where)).scalar_one()
        return rows, int(total)

    # --- scene admins ---------------------------------------------------------------

    def add_scene_admin(
        self, place_id: str, admin: str, *, added_by: str, now: int | None = None
    ) -> bool:
        """False when admin is an active admin of the place already."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(t.scene_admin).values(
                        id=str(uuid.uuid4()),
                        place_id=place_id,
                        admin=admin.lower(),
                        added_by=added_by.lower(),
                        created_at=now_ms() if now is None else now,
                        active=True,
                    )
                )
        except IntegrityError:
            return False
        return True

    def remove_scene_admin(self, place_id: str, admin: str) -> bool:
        """Deactivates the row (kept for history); False when not an active admin."""
        with self.engine.begin() as c:
            r = c.execute(
                sa.update(t.scene_admin)
                .where(
                    t.scene_admin.c.place_id == place_id,
                    t.scene_admin.c.admin == admin.lower(),
                    t.scene_admin.c.active.is_(True),
                )
                .values(active=False)
            )
        return bool(r.rowcount)

    def scene_admins(self, place_id: str) -> list[SceneAdmin]:
        q = (
            sa.select(t.scene_admin)
            .where(t.scene_admin.c.place_id == place_id, t.scene_admin.c.active.is_(True))
            .order_by(t.scene_admin.c.created_at, t.scene_admin.c.admin)
        )
        with self.engine.connect() as c:
            return [SceneAdmin(r.place_id, r.admin, r.added_by, r.created_at) for r in c.execute(q)]

    def is_scene_admin(self, place_id: str, address: str) -> bool:
        q = sa.select(t.scene_admin.c.id).where(
            t.scene_admin.c.place_id == place_id,
            t.scene_admin.c.admin == address.lower(),
            t.scene_admin.c.active.is_(True),
        )
        with self.engine.connect() as c:
            return c.execute(q.limit(1)).first() is not None

    # --- one call per /get-scene-adapter -----------------------------------------------

    def admission(
        self, address: str, place_id: str | None, room: str | None, *, now: int | None = None
    ) -> Admission:
        """Everything a token request needs, on one connection: the active platform ban,
        the scene ban, the room's moderation flag and the caller's roles in it."""
        now = now_ms() if now is None else now
        a = address.lower()
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(t.user_bans)
                .where(
                    t.user_bans.c.banned_address == a,
                    t.user_bans.c.lifted_at.is_(None),
                    sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
                )
                .limit(1)
            ).first()
            scene_banned = False
            if place_id is not None:
                scene_banned = (
                    c.execute(
                        sa.select(t.scene_bans.c.id)
                        .where(
                            t.scene_bans.c.place_id == place_id,
                            t.scene_bans.c.banned_address == a,
                        )
                        .limit(1)
                    ).first()
                    is not None
                )
            moderated = False
            roles: frozenset[str] = frozenset()
            if room is not None:
                moderated = bool(
                    c.execute(
                        sa.select(t.scene_room_settings.c.moderated).where(
                            t.scene_room_settings.c.room_id == room
                        )
                    ).scalar()
                )
                roles = frozenset(
                    r[0]
                    for r in c.execute(
                        sa.select(t.scene_room_roles.c.role).where(
                            t.scene_room_roles.c.room_id == room,
                            t.scene_room_roles.c.identity == a,
                        )
                    )
                )
        return Admission(None if row is None else _ban(row), scene_banned, moderated, roles)

    def change_version(self) -> int:
        """The moderation change counter: every write to the ban, admin, role and
        room-settings tables bumps it (database triggers, revision 0004), whichever
        process writes. One primary-key read: cheap enough to poll several times a
        second."""
        with self.engine.connect() as c:
            return _version(c)

    def snapshot(self, *, now: int | None = None) -> Snapshot:
        """What token requests read, for an in-memory copy (:class:`Snapshot`)."""
        now = now_ms() if now is None else now
        with self.engine.connect() as c:
            version = _version(c)
            platform = {
                r.banned_address: r.expires_at
                for r in c.execute(
                    sa.select(t.user_bans.c.banned_address, t.user_bans.c.expires_at).where(
                        t.user_bans.c.lifted_at.is_(None),
                        sa.or_(t.user_bans.c.expires_at.is_(None), t.user_bans.c.expires_at > now),
                    )
                )
            }
            scene = {
                (r.place_id, r.banned_address)
                for r in c.execute(
                    sa.select(t.scene_bans.c.place_id, t.scene_bans.c.banned_address)
                )
            }
            moderated = {
                r.room_id
                for r in c.execute(
                    sa.select(t.scene_room_settings.c.room_id).where(
                        t.scene_room_settings.c.moderated.is_(True)
                    )
                )
            }
            roles: dict[tuple[str, str], set[str]] = {}
            for r in c.execute(
                sa.select(
                    t.scene_room_roles.c.room_id,
                    t.scene_room_roles.c.identity,
                    t.scene_room_roles.c.role,
                )
            ):
                roles.setdefault((r.room_id, r.identity), set()).add(r.role)
            admins = frozenset(
                (r.place_id, r.admin)
                for r in c.execute(
                    sa.select(t.scene_admin.c.place_id, t.scene_admin.c.admin).where(
                        t.scene_admin.c.active.is_(True)
                    )
                )
            )
        return Snapshot(
            platform,
            scene,
            moderated,
            {k: frozenset(v) for k, v in roles.items()},
            version,
            admins,
        )

    # --- scene-room roles and settings (control-plane.md 1.7) ---------------------------

    def add_role(self, room: str, role: str, identity: str, *, added_by: str) -> bool:
        try:
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(t.scene_room_roles).values(
                        room_id=room,
                        role=role,
                        identity=identity,
                        added_by=added_by.lower(),
                        created_at=now_ms(),
                    )
                )
        except IntegrityError:
            return False
        return True

    def remove_role(self, room: str, role: str, identity: str) -> bool:
        with self.engine.begin() as c:
            r = c.execute(
                sa.delete(t.scene_room_roles).where(
                    t.scene_room_roles.c.room_id == room,
                    t.scene_room_roles.c.role == role,
                    t.scene_room_roles.c.identity == identity,
                )
            )
        return bool(r.rowcount)

    def roles(self, room: str, role: str) -> list[str]:
        q = (
            sa.select(t.scene_room_roles.c.identity)
            .where(t.scene_room_roles.c.room_id == room, t.scene_room_roles.c.role == role)
            .order_by(t.scene_room_roles.c.created_at, t.scene_room_roles.c.identity)
        )
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(q)]

    def set_moderated(self, room: str, place_id: str, moderated: bool) -> None:
        with self.engine.begin() as c:
            r = c.execute(
                sa.update(t.scene_room_settings)
                .where(t.scene_room_settings.c.room_id == room)
                .values(moderated=moderated, place_id=place_id, updated_at=now_ms())
            )
            if not r.rowcount:
                c.execute(
                    sa.insert(t.scene_room_settings).values(
                        room_id=room, place_id=place_id, moderated=moderated, updated_at=now_ms()
                    )
                )

    def is_moderated(self, room: str) -> bool:
        with self.engine.connect() as c:
            return bool(
                c.execute(
                    sa.select(t.scene_room_settings.c.moderated).where(
                        t.scene_room_settings.c.room_id == room
                    )
                ).scalar()
            )

    # --- stream links ---------------------------------------------------------------------

    def create_cast_link(
        self,
        *,
        key_hash: str,
        place_id: str,
        place_name: str,
        room_id: str,
        is_world: bool,
        created_by: str,
        expires_at: int,
        now: int | None = None,
    ) -> CastLink:
        """A new link for the place; the previous live links of that place are revoked."""
        now = now_ms() if now is None else now
        link = CastLink(
            str(uuid.uuid4()),
            place_id,
            place_name,
            room_id,
            is_world,
            key_hash,
            created_by.lower(),
            now,
            expires_at,
            None,
        )
        with self.engine.begin() as c:
            c.execute(
                sa.update(t.cast_links)
                .where(t.cast_links.c.place_id == place_id, t.cast_links.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            c.execute(sa.insert(t.cast_links).values(**link.__dict__))
        return link

    def cast_link(self, key_hash: str, *, now: int | None = None) -> CastLink | None:
        """The live link with this key hash (not revoked, not expired)."""
        now = now_ms() if now is None else now
        q = sa.select(t.cast_links).where(
            t.cast_links.c.key_hash == key_hash,
            t.cast_links.c.revoked_at.is_(None),
            t.cast_links.c.expires_at > now,
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return None if row is None else CastLink(**dict(row._mapping))

    def live_cast_room(self, room_id: str, *, now: int | None = None) -> CastLink | None:
        now = now_ms() if now is None else now
        q = sa.select(t.cast_links).where(
            t.cast_links.c.room_id == room_id,
            t.cast_links.c.revoked_at.is_(None),
            t.cast_links.c.expires_at > now,
        )
        with self.engine.connect() as c:
            row = c.execute(q.limit(1)).first()
        return None if row is None else CastLink(**dict(row._mapping))

    # --- connection info --------------------------------------------------------------

    def record_connection(
        self,
        address: str,
        *,
        ip_address: str | None = None,
        device_id: str | None = None,
        now: int | None = None,
    ) -> None:
        """Upsert; a None value never overwrites a stored one."""
        now = now_ms() if now is None else now
        address = address.lower()
        with self.engine.begin() as c:
            row = c.execute(
                sa.select(t.player_connection_info).where(
                    t.player_connection_info.c.address == address
                )
            ).first()
            if row is None:
                try:
                    with c.begin_nested():  # a savepoint: a concurrent insert leaves c usable
                        c.execute(
                            sa.insert(t.player_connection_info).values(
                                address=address,
                                ip_address=ip_address,
                                device_id=device_id,
                                created_at=now,
                                updated_at=now,
                            )
                        )
                    return
                except IntegrityError:
                    pass  # inserted concurrently: update below
            values: dict[str, Any] = {"updated_at": now}
            if ip_address is not None:
                values["ip_address"] = ip_address
            if device_id is not None:
                values["device_id"] = device_id
            c.execute(
                sa.update(t.player_connection_info)
                .where(t.player_connection_info.c.address == address)
                .values(**values)
            )

    def connection_info(self, address: str) -> Mapping[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(t.player_connection_info).where(
                    t.player_connection_info.c.address == address.lower()
                )
            ).first()
        return None if row is None else dict(row._mapping)


__all__ = [
    "Admission",
    "CastLink",
    "Conflict",
    "PlatformBan",
    "SceneAdmin",
    "SceneBan",
    "Snapshot",
    "StorageError",
    "Store",
    "Warning",
    "current_revision",
    "database_url",
    "default_data_dir",
    "head_revision",
    "migrate",
    "redact",
]
