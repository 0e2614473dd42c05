"""Bridge API keys: created, listed and revoked by operators, stored hashed.

A key is ``dcb_<id>_<secret>``: ``id`` (12 hex digits) names the row, ``secret``
(32 random bytes, url-safe base64) is shown once at creation and only its
SHA-256 is stored (the secret is high-entropy, so a fast hash is enough and a
lookup costs one indexed read plus a constant-time compare). Each key has a
name, scopes (:mod:`dclcomms.bridge.scopes`), an identity (``server:<name>``:
the sender of what it injects, never a player's address), optional expiry, and
per-key limits (messages/s published, payload bytes).

:class:`KeyStore` is the interface the gateway needs; :class:`SqlKeyStore`
implements it on the gatekeeper's database (SQLite for an embedded realm, PostgreSQL
in production; table ``bridge_keys``, migration 0003); :class:`MemoryKeyStore` keeps
them in memory (tests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dclcomms.bridge.scopes import check_scope
from dclcomms.clock import now_ms as clock_ms
from dclcomms.errors import BridgeError

KEY_RE = re.compile(r"dcb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_RATE = 100.0  # messages/s a key may publish (token bucket, burst = 1 s)
DEFAULT_MAX_BYTES = 16 * 1024  # payload bytes per published message


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One stored key (never the secret)."""

    id: str
    name: str
    identity: str
    scopes: tuple[str, ...]
    created_ms: int
    expires_ms: int | None = None
    revoked_ms: int | None = None
    rate: float = DEFAULT_RATE
    max_bytes: int = DEFAULT_MAX_BYTES

    def status(self, now_ms: int | None = None) -> str:
        now = clock_ms() if now_ms is None else now_ms
        if self.revoked_ms is not None:
            return "revoked"
        if self.expires_ms is not None and self.expires_ms <= now:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "identity": self.identity,
            "scopes": list(self.scopes),
            "createdAt": self.created_ms,
            "expiresAt": self.expires_ms,
            "revokedAt": self.revoked_ms,
            "rate": self.rate,
            "maxBytes": self.max_bytes,
            "status": self.status(),
        }


class KeyStore(ABC):
    """Where keys live: the gatekeeper's database in a deployment."""

    @abstractmethod
    def _insert(self, record: KeyRecord, secret_hash: str) -> None: ...

    @abstractmethod
    def _get(self, key_id: str) -> tuple[KeyRecord, str] | None: ...

    @abstractmethod
    def list(self) -> list[KeyRecord]: ...

    @abstractmethod
    def _set_revoked(self, key_id: str, at_ms: int) -> bool: ...

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        ttl_s: float | None = None,
        rate: float = DEFAULT_RATE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        now_ms: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(the key text, shown once; its record)``."""
        if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
            raise BridgeError(f"key name must match {NAME_RE.pattern}: {name!r}", code="bad_scope")
        scope_list = tuple(dict.fromkeys(check_scope(s) for s in scopes))
        if not scope_list:
            raise BridgeError("a key needs at least one scope", code="bad_scope")
        if not (rate > 0 and 1 <= max_bytes <= 1 << 20):
            raise BridgeError("rate must be > 0 and max_bytes 1..1048576", code="bad_scope")
        now = clock_ms() if now_ms is None else now_ms
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = KeyRecord(
            id=key_id,
            name=name,
            identity=f"server:{name}",
            scopes=scope_list,
            created_ms=now,
            expires_ms=None if ttl_s is None else now + int(ttl_s * 1000),
            rate=float(rate),
            max_bytes=int(max_bytes),
        )
        self._insert(record, _hash(secret))
        return f"dcb_{key_id}_{secret}", record

    def revoke(self, key_id: str, *, now_ms: int | None = None) -> KeyRecord:
        """Revokes a key by id (idempotent); ``key_not_found`` when there is none."""
        now = clock_ms() if now_ms is None else now_ms
        if not self._set_revoked(key_id, now):
            raise BridgeError(f"no key {key_id!r}", code="key_not_found")
        got = self._get(key_id)
        assert got is not None
        return got[0]

    def authenticate(self, key: object, *, now_ms: int | None = None) -> KeyRecord:
        """The record of an active key, else ``BridgeError``: ``unknown_key`` (malformed,
        unknown id or wrong secret), ``key_revoked``, ``key_expired``."""
        m = KEY_RE.fullmatch(key) if isinstance(key, str) else None
        got = self._get(m.group(1)) if m else None
        if m is None or got is None or not hmac.compare_digest(got[1], _hash(m.group(2))):
            raise BridgeError("unknown API key", code="unknown_key")
        record = got[0]
        status = record.status(now_ms)
        if status == "revoked":
            raise BridgeError("API key revoked", code="key_revoked")
        if status == "expired":
            raise BridgeError("API key expired", code="key_expired")
        return record


class MemoryKeyStore(KeyStore):
    """Keys in memory (tests, short-lived embedded realms)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[KeyRecord, str]] = {}

    def _insert(self, record: KeyRecord, secret_hash: str) -> None:
        self._rows[record.id] = (record, secret_hash)

    def _get(self, key_id: str) -> tuple[KeyRecord, str] | None:
        return self._rows.get(key_id)

    def list(self) -> list[KeyRecord]:
        return sorted((r for r, _ in self._rows.values()), key=lambda r: (r.created_ms, r.id))

    def _set_revoked(self, key_id: str, at_ms: int) -> bool:
        row = self._rows.get(key_id)
        if row is None:
            return False
        if row[0].revoked_ms is None:
            self._rows[key_id] = (_replace(row[0], revoked_ms=at_ms), row[1])
        return True


def _replace(r: KeyRecord, **kw: Any) -> KeyRecord:
    from dataclasses import replace

    return replace(r, **kw)


class SqlKeyStore(KeyStore):
    """Keys in the gatekeeper's database (table ``bridge_keys``, Alembic revision 0003 of
    :mod:`dclcomms.gatekeeper.storage`): SQLite for an embedded realm, PostgreSQL in
    production. ``database``/``data_dir`` as :meth:`dclcomms.gatekeeper.storage.Store.open`
    (which migrates the schema to the head first)."""

    def __init__(
        self, database: str | None = None, *, data_dir: str | None = None, store: Any = None
    ) -> None:
        from dclcomms.gatekeeper.schema import bridge_keys
        from dclcomms.gatekeeper.storage import Store

        self._owns_store = store is None  # a store passed in (the gatekeeper's) stays open
        self.store = store if store is not None else Store.open(database, data_dir=data_dir)
        self.engine = self.store.engine
        self.table = bridge_keys

    def close(self) -> None:
        if self._owns_store:
            self.store.close()  # once no call in a worker thread holds a connection

    @staticmethod
    def _record(row: Any) -> KeyRecord:
        return KeyRecord(
            id=row.id,
            name=row.name,
            identity=row.identity,
            scopes=tuple(json.loads(row.scopes)),
            created_ms=int(row.created_at),
            expires_ms=None if row.expires_at is None else int(row.expires_at),
            revoked_ms=None if row.revoked_at is None else int(row.revoked_at),
            rate=float(row.rate),
            max_bytes=int(row.max_bytes),
        )

    def _insert(self, record: KeyRecord, secret_hash: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                self.table.insert().values(
                    id=record.id,
                    name=record.name,
                    identity=record.identity,
                    secret_sha256=secret_hash,
                    scopes=json.dumps(list(record.scopes)),
                    created_at=record.created_ms,
                    expires_at=record.expires_ms,
                    revoked_at=record.revoked_ms,
                    rate=record.rate,
                    max_bytes=record.max_bytes,
                )
            )

    def _get(self, key_id: str) -> tuple[KeyRecord, str] | None:
        with self.engine.connect() as c:
            row = c.execute(self.table.select().where(self.table.c.id == key_id)).first()
        return None if row is None else (self._record(row), row.secret_sha256)

    def list(self) -> list[KeyRecord]:
        t = self.table
        with self.engine.connect() as c:
            rows = c.execute(t.select().order_by(t.c.created_at, t.c.id)).all()
        return [self._record(r) for r in rows]

    def _set_revoked(self, key_id: str, at_ms: int) -> bool:
        t = self.table
        with self.engine.begin() as c:
            if c.execute(t.select().where(t.c.id == key_id)).first() is None:
                return False
            c.execute(
                t.update()
                .where(t.c.id == key_id, t.c.revoked_at.is_(None))
                .values(revoked_at=at_ms)
            )
        return True


def open_key_store(database: str | None, *, data_dir: str | None = None) -> KeyStore:
    """The gatekeeper database's keys (:class:`SqlKeyStore`; ``database`` empty: the SQLite
    file under ``data_dir``)."""
    return SqlKeyStore(database or None, data_dir=data_dir)


def format_keys(records: Sequence[KeyRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RATE",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "SqlKeyStore",
    "format_keys",
    "open_key_store",
]
