"""Moderation tables of control-plane.md 1.6.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scene_admin",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("place_id", sa.String(200), nullable=False),
        sa.Column("admin", sa.String(42), nullable=False),
        sa.Column("added_by", sa.String(42), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scene_admin"),
    )
    op.create_index(
        "uq_scene_admin_place_admin_active",
        "scene_admin",
        ["place_id", "admin"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "scene_bans",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("place_id", sa.String(200), nullable=False),
        sa.Column("banned_address", sa.String(42), nullable=False),
        sa.Column("banned_by", sa.String(42), nullable=False),
        sa.Column("banned_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scene_bans"),
        sa.UniqueConstraint(
            "place_id", "banned_address", name="uq_scene_bans_place_id_banned_address"
        ),
    )
    op.create_table(
        "user_bans",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("banned_address", sa.String(42), nullable=False),
        sa.Column("banned_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("custom_message", sa.Text(), nullable=True),
        sa.Column("banned_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("lifted_at", sa.BigInteger(), nullable=True),
        sa.Column("lifted_by", sa.String(200), nullable=True),
        sa.Column("banned_device_id", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_user_bans"),
    )
    op.create_index("ix_user_bans_banned_address", "user_bans", ["banned_address"])
    op.create_index(
        "ix_user_bans_device_active",
        "user_bans",
        ["banned_device_id"],
        sqlite_where=sa.text("lifted_at IS NULL"),
        postgresql_where=sa.text("lifted_at IS NULL"),
    )
    op.create_table(
        "user_warnings",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("warned_address", sa.String(42), nullable=False),
        sa.Column("warned_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("warned_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user_warnings"),
    )
    op.create_index("ix_user_warnings_warned_address", "user_warnings", ["warned_address"])
    op.create_table(
        "player_connection_info",
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("ip_address", sa.String(64), nullable=True),
        sa.Column("device_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address", name="pk_player_connection_info"),
    )


def downgrade() -> None:
    op.drop_table("player_connection_info")
    op.drop_index("ix_user_warnings_warned_address", table_name="user_warnings")
    op.drop_table("user_warnings")
    op.drop_index("ix_user_bans_device_active", table_name="user_bans")
    op.drop_index("ix_user_bans_banned_address", table_name="user_bans")
    op.drop_table("user_bans")
    op.drop_table("scene_bans")
    op.drop_index("uq_scene_admin_place_admin_active", table_name="scene_admin")
    op.drop_table("scene_admin")
