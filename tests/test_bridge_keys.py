"""Bridge API keys in the gatekeeper database (migration 0003) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dclcomms.bridge.keys import SqlKeyStore
from dclcomms.errors import BridgeError
from tests.helpers.postgres import pg_url  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlKeyStore]:
    if request.param == "sqlite":
        s = SqlKeyStore(data_dir=str(tmp_path))
    else:
        s = SqlKeyStore(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def test_keys_are_stored_hashed_with_expiry_and_revocation(store: SqlKeyStore) -> None:
    key, rec = store.create("game", ["scene:main:s1", "island:*"], ttl_s=60, now_ms=1_000)
    assert store.authenticate(key, now_ms=2_000) == rec
    with store.engine.connect() as c:
        rows = c.execute(store.table.select()).all()
    assert len(rows) == 1 and key.split("_")[2] not in repr(tuple(rows[0]))  # never the secret
    with pytest.raises(BridgeError) as e:
        store.authenticate(key, now_ms=61_001)
    assert e.value.code == "key_expired"
    assert store.revoke(rec.id, now_ms=3_000).revoked_ms == 3_000
    assert store.revoke(rec.id, now_ms=4_000).revoked_ms == 3_000  # idempotent
    with pytest.raises(BridgeError) as e:
        store.authenticate(key, now_ms=2_000)
    assert e.value.code == "key_revoked"
    other, _ = store.create("other", ["world:party.dcl.eth"], rate=5, max_bytes=100)
    assert [r.name for r in store.list()] == ["game", "other"]
    got = store.authenticate(other)
    assert (got.rate, got.max_bytes, got.scopes) == (5.0, 100, ("world:party.dcl.eth",))
    with pytest.raises(BridgeError) as e:
        store.authenticate(other[:-2] + "xx")
    assert e.value.code == "unknown_key"
