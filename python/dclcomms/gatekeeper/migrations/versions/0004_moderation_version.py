"""A change counter of the moderation tables, bumped by triggers on every write.

Every insert, update or delete of ``user_bans``, ``scene_bans``, ``scene_admin``,
``scene_room_roles`` and ``scene_room_settings`` adds 1 to the single row of
``moderation_version``, whoever writes (a gatekeeper's routes, the operator
commands, SQL by hand). A running gatekeeper polls that one row and, when it
moved, reloads its in-memory snapshot and kicks the newly banned at once
(docs/gatekeeper.md "Changes from other processes").

SQLite: row-level triggers per table and operation. PostgreSQL: one statement-level
trigger per table calling ``dclcomms_moderation_bump()``.

A later revision that rebuilds one of these tables in SQLite batch mode (which
copies the table and drops its triggers) must create its triggers again
(:func:`create_triggers`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("user_bans", "scene_bans", "scene_admin", "scene_room_roles", "scene_room_settings")
_OPS = ("insert", "update", "delete")
_BUMP = "UPDATE moderation_version SET version = version + 1 WHERE id = 1"


def create_triggers(tables: tuple[str, ...] = TABLES) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in tables:
            op.execute(
                f"CREATE TRIGGER {table}_moderation_bump AFTER INSERT OR UPDATE OR DELETE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION dclcomms_moderation_bump()"
            )
        return
    for table in tables:
        for what in _OPS:
            op.execute(
                f"CREATE TRIGGER {table}_moderation_bump_{what} AFTER {what.upper()} ON {table} "
                f"BEGIN {_BUMP}; END"
            )


def drop_triggers(tables: tuple[str, ...] = TABLES) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in tables:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_moderation_bump ON {table}")
        return
    for table in tables:
        for what in _OPS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_moderation_bump_{what}")


def upgrade() -> None:
    op.create_table(
        "moderation_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_moderation_version"),
    )
    op.execute("INSERT INTO moderation_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION dclcomms_moderation_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_BUMP}; RETURN NULL; END $$"
        )
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS dclcomms_moderation_bump()")
    op.drop_table("moderation_version")
