"""Gatekeeper storage (control-plane.md 1.6): every query on SQLite and PostgreSQL,
Alembic migrations from an empty database and from the previous revision, the
migrate command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dclcomms.gatekeeper import storage
from dclcomms.gatekeeper.storage import Conflict, StorageError, Store
from tests.helpers.postgres import db_url, pg_url  # noqa: F401

A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
OWNER = "0x" + "0c" * 20


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store.open(db_url)
    yield s
    s.close()


def test_open_migrates_an_empty_database_to_head(db_url: str) -> None:  # noqa: F811
    engine = storage.create_engine(storage.database_url(db_url))
    assert storage.current_revision(engine) is None
    engine.dispose()
    s = Store.open(db_url)
    try:
        assert storage.current_revision(s.engine) == storage.head_revision()
        names = set(sa.inspect(s.engine).get_table_names())
        assert {
            "scene_admin",
            "scene_bans",
            "user_bans",
            "user_warnings",
            "player_connection_info",
            "cast_links",
            "scene_room_roles",
            "scene_room_settings",
            "alembic_version",
        } <= names
    finally:
        s.close()


def test_upgrade_from_the_previous_revision_keeps_rows(db_url: str) -> None:  # noqa: F811
    order = storage._order()
    assert order[-1] == storage.head_revision() and len(order) >= 2
    previous = order[-2]
    engine = storage.create_engine(storage.database_url(db_url))
    try:
        assert storage.migrate(engine, previous) == previous
        with engine.begin() as c:
            c.execute(
                sa.text(
                    "INSERT INTO scene_bans (id, place_id, banned_address, banned_by, banned_at) "
                    "VALUES ('x1', 'place', :a, :o, 1)"
                ),
                {"a": A, "o": OWNER},
            )
        with pytest.raises(StorageError) as e:
            Store.open(db_url, migrate=False)
        assert e.value.code == "not_migrated"
        assert storage.migrate(engine) == storage.head_revision()
    finally:
        engine.dispose()
    s = Store.open(db_url, migrate=False)
    try:
        assert s.is_scene_banned("place", A)
    finally:
        s.close()


def test_downgrade_to_base_and_back(db_url: str) -> None:  # noqa: F811
    engine = storage.create_engine(storage.database_url(db_url))
    try:
        storage.migrate(engine)
        storage.migrate(engine, "base")
        assert storage.current_revision(engine) is None
        assert "scene_bans" not in sa.inspect(engine).get_table_names()
        assert storage.migrate(engine) == storage.head_revision()
    finally:
        engine.dispose()


def test_schema_of_the_revisions_matches_the_metadata(store: Store) -> None:
    """The revisions create what schema.py declares (Alembic's autogenerate diff is empty)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from dclcomms.gatekeeper.schema import metadata

    with store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []


def test_platform_bans(store: Store) -> None:
    assert store.platform_ban(A) is None
    ban = store.add_platform_ban(
        A.upper().replace("0X", "0x"), banned_by="moderator", reason="spam", now=1000
    )
    assert ban.banned_address == A and ban.expires_at is None
    assert store.platform_ban(A, now=2000) == ban
    with pytest.raises(Conflict):
        store.add_platform_ban(A, banned_by="moderator", now=2000)
    assert [b.banned_address for b in store.platform_bans(now=2000)] == [A]
    assert store.lift_platform_ban(A, lifted_by="moderator", now=3000)
    assert not store.lift_platform_ban(A, lifted_by="moderator", now=3001)
    assert store.platform_ban(A, now=4000) is None
    # timed ban: active until expires_at
    timed = store.add_platform_ban(B, banned_by="m", duration_ms=500, custom_message="bye", now=10)
    assert timed.expires_at == 510
    assert store.platform_ban(B, now=509) is not None
    assert store.platform_ban(B, now=510) is None
    assert store.platform_bans(now=600) == []
    store.add_platform_ban(B, banned_by="m", now=600)  # the expired one does not conflict


def test_warnings(store: Store) -> None:
    store.add_warning(A, warned_by="mod", reason="first", now=1)
    store.add_warning(A, warned_by="mod", reason="second", now=2)
    assert [w.reason for w in store.warnings(A)] == ["first", "second"]
    assert store.warnings(B) == []


def test_scene_bans(store: Store) -> None:
    assert store.add_scene_ban("p1", A, banned_by=OWNER, now=1)
    assert not store.add_scene_ban("p1", A, banned_by=OWNER, now=2)  # unique per place
    assert store.add_scene_ban("p2", A, banned_by=OWNER, now=3)
    for i in range(5):
        store.add_scene_ban("p1", f"0x{i:040x}", banned_by=OWNER, now=10 + i)
    assert store.is_scene_banned("p1", A) and not store.is_scene_banned("p1", B)
    rows, total = store.scene_bans("p1", limit=2, offset=0)
    assert total == 6 and [r.banned_address for r in rows] == [f"0x{4:040x}", f"0x{3:040x}"]
    rows, _ = store.scene_bans("p1", limit=10, offset=5)
    assert [r.banned_address for r in rows] == [A]
    assert store.remove_scene_ban("p1", A) and not store.remove_scene_ban("p1", A)
    assert not store.is_scene_banned("p1", A) and store.is_scene_banned("p2", A)


def test_scene_admins(store: Store) -> None:
    assert store.add_scene_admin("p1", A, added_by=OWNER, now=1)
    assert not store.add_scene_admin("p1", A, added_by=OWNER, now=2)  # unique while active
    assert store.is_scene_admin("p1", A) and not store.is_scene_admin("p2", A)
    assert store.remove_scene_admin("p1", A) and not store.remove_scene_admin("p1", A)
    assert store.scene_admins("p1") == []
    assert store.add_scene_admin("p1", A, added_by=B, now=3)  # re-added after removal
    admins = store.scene_admins("p1")
    assert [(x.admin, x.added_by) for x in admins] == [(A, B)]


def test_connection_info_null_never_overwrites(store: Store) -> None:
    store.record_connection(A, ip_address="10.0.0.1", device_id="dev-1", now=1)
    store.record_connection(A, ip_address=None, device_id=None, now=2)
    info = store.connection_info(A)
    assert info is not None
    assert (info["ip_address"], info["device_id"], info["created_at"], info["updated_at"]) == (
        "10.0.0.1",
        "dev-1",
        1,
        2,
    )
    store.record_connection(A, ip_address="10.0.0.2", now=3)
    info = store.connection_info(A)
    assert info is not None and (info["ip_address"], info["device_id"]) == ("10.0.0.2", "dev-1")


def test_sqlite_default_file_under_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    s = Store.open(data_dir=tmp_path / "data")
    try:
        assert (tmp_path / "data" / storage.DB_FILE).exists()
        with s.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        s.close()


def test_bad_database_urls() -> None:
    with pytest.raises(StorageError) as e:
        Store.open("postgresql://nobody@127.0.0.1:1/none")
    assert e.value.code == "database_unavailable"
    assert "***" in storage.redact("postgresql://u:secret@h/db")
    from dclcomms.errors import ConfigError

    with pytest.raises(ConfigError) as e2:
        storage.database_url("mysql://u@h/db")
    assert e2.value.code == "bad_value"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dclcomms", "gatekeeper", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_command(db_url: str) -> None:  # noqa: F811
    r = _cli("migrate", "--database", db_url, "--current")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["to"] is None
    r = _cli("migrate", "--database", db_url, "--revision", storage._order()[0])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["to"] == storage._order()[0]
    r = _cli("migrate", "--database", db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["from"] == storage._order()[0] and out["to"] == out["head"]


def test_migrate_command_errors(tmp_path: Path) -> None:
    r = _cli("migrate", "--database", "mysql://x@y/z")
    assert r.returncode == 2 and "[bad_value]" in r.stderr
    r = _cli("migrate", "--database", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 1 and "error" in r.stderr


def test_operator_commands(tmp_path: Path) -> None:
    db = ["--data-dir", str(tmp_path / "ops")]
    r = _cli("ban", A, "--reason", "spam", "--message", "bye", *db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bannedAddress"] == A
    r = _cli("ban", A, "--reason", "again", *db)
    assert r.returncode == 1 and "[already_banned]" in r.stderr
    r = _cli("bans", *db)
    assert [b["bannedAddress"] for b in json.loads(r.stdout)] == [A]
    assert _cli("unban", A, *db).returncode == 0
    assert _cli("unban", A, *db).returncode == 1  # nothing to lift
    assert json.loads(_cli("bans", *db).stdout) == []
    r = _cli("admins", "add", B, "--place", "p1", *db)
    assert r.returncode == 0 and json.loads(r.stdout)["changed"] is True
    r = _cli("admins", "list", "--place", "p1", *db)
    assert [x["admin"] for x in json.loads(r.stdout)] == [B]
    assert _cli("admins", "remove", B, "--place", "p1", *db).returncode == 0
    r = _cli("scene-bans", "add", B, "--place", "p1", *db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"place": "p1", "bannedAddress": B, "changed": True}
    r = _cli("scene-bans", "list", "--place", "p1", *db)
    assert [x["bannedAddress"] for x in json.loads(r.stdout)] == [B]
    assert _cli("scene-bans", "remove", B, "--place", "p1", *db).returncode == 0
    assert _cli("scene-bans", "remove", B, "--place", "p1", *db).returncode == 1  # none left
    r = _cli("admins", "add", "--place", "p1", *db)
    assert r.returncode == 2 and "admins add needs an ADDRESS [bad_value]" in r.stderr
    r = _cli("ban", "not-an-address", "--reason", "x", *db)
    assert r.returncode == 2 and "[bad_value]" in r.stderr
    s = Store.open(data_dir=tmp_path / "ops")
    try:
        assert s.platform_ban(A) is None and s.scene_admins("p1") == []
        assert s.scene_bans("p1") == ([], 0)
    finally:
        s.close()


def test_snapshot_answers_like_the_database(store: Store) -> None:
    store.add_platform_ban(A, banned_by="m", now=100)
    store.add_platform_ban(B, banned_by="m", duration_ms=50, now=100)
    store.add_scene_ban("p1", B, banned_by=OWNER, now=1)
    store.set_moderated("room-1", "p1", True)
    store.add_role("room-1", "speaker", A, added_by=OWNER)
    snap = store.snapshot(now=120)
    for now in (120, 200):
        for who in (A, B, OWNER):
            for place, room in (("p1", "room-1"), ("p2", "room-2")):
                db = store.admission(who, place, room, now=now)
                mem = snap.admission(who, place, room, now)
                assert (db.platform_ban is None) == (mem.platform_ban is None), (who, now)
                assert (db.scene_banned, db.moderated, db.roles) == (
                    mem.scene_banned,
                    mem.moderated,
                    mem.roles,
                )


def test_change_version_moves_on_every_moderation_write(store: Store) -> None:
    """Revision 0004's triggers: every write to the ban, admin, role and room-settings
    tables moves the counter (whoever writes: SQL by hand too); other tables do not; the
    snapshot carries the counter read with it."""
    seen = [store.change_version()]

    def moved() -> bool:
        seen.append(store.change_version())
        return seen[-1] > seen[-2]

    store.add_platform_ban(A, banned_by="m")
    assert moved()
    store.lift_platform_ban(A, lifted_by="m")
    assert moved()
    store.add_scene_ban("p1", B, banned_by=OWNER)
    assert moved()
    store.remove_scene_ban("p1", B)
    assert moved()
    store.add_scene_admin("p1", B, added_by=OWNER)
    assert moved()
    store.remove_scene_admin("p1", B)
    assert moved()
    store.add_role("room-1", "speaker", A, added_by=OWNER)
    assert moved()
    store.remove_role("room-1", "speaker", A)
    assert moved()
    store.set_moderated("room-1", "p1", True)
    assert moved()
    with store.engine.begin() as c:  # a writer that is not the Store
        c.execute(sa.text("DELETE FROM scene_room_settings"))
    assert moved()
    store.record_connection(A, device_id="d1")
    store.add_warning(A, warned_by="m", reason="x")
    assert not moved()
    assert store.snapshot().version == seen[-1]
    with store.engine.begin() as c:  # the row lost: 0, and the snapshot still loads
        c.execute(sa.text("DELETE FROM moderation_version"))
    store.add_scene_ban("p1", A, banned_by=OWNER)
    assert store.change_version() == 0
    assert ("p1", A) in store.snapshot().scene


def test_downgrade_from_head_drops_the_change_counter(db_url: str) -> None:  # noqa: F811
    engine = storage.create_engine(storage.database_url(db_url))
    try:
        storage.migrate(engine)
        storage.migrate(engine, storage._order()[-2])
        assert "moderation_version" not in sa.inspect(engine).get_table_names()
        with engine.begin() as c:  # no trigger left behind on the kept tables
            c.execute(
                sa.text(
                    "INSERT INTO scene_bans (id, place_id, banned_address, banned_by, banned_at) "
                    "VALUES ('x1', 'place', :a, :o, 1)"
                ),
                {"a": A, "o": OWNER},
            )
        assert storage.migrate(engine) == storage.head_revision()
    finally:
        engine.dispose()


def _closed(dbapi_conn: object) -> bool:
    """Whether a DBAPI connection (psycopg or sqlite3) was closed."""
    closed = getattr(dbapi_conn, "closed", None)
    if closed is not None:  # psycopg
        return bool(closed)
    try:
        dbapi_conn.execute("SELECT 1")  # type: ignore[attr-defined]
    except Exception:  # sqlite3.ProgrammingError: cannot operate on a closed database
        return True
    return False


def test_close_waits_for_a_call_still_running_in_another_thread(db_url: str) -> None:  # noqa: F811
    """A store call in a worker thread whose async caller was cancelled (a realm stopping)
    holds a connection while the store is closed. close() waits for it, then closes that
    connection too; before, dispose() ran at once and the connection, checked in to the
    disposed pool afterwards, stayed open until garbage collected (a ResourceWarning in
    whatever test was running then)."""
    s = Store.open(db_url)
    entered, release = threading.Event(), threading.Event()
    held: list[object] = []

    def slow_call() -> None:
        with s.engine.connect() as c:
            held.append(c.connection.dbapi_connection)
            entered.set()
            release.wait(60)
            c.execute(sa.text("SELECT 1"))

    call = threading.Thread(target=slow_call)
    call.start()
    closer = threading.Thread(target=s.close)
    try:
        assert entered.wait(60)
        closer.start()
        closer.join(1.0)
        assert closer.is_alive()  # waiting for the call's connection
    finally:
        release.set()
        call.join(60)
        if closer.ident is not None:
            closer.join(60)
    assert not closer.is_alive() and not call.is_alive()
    assert _closed(held[0])
