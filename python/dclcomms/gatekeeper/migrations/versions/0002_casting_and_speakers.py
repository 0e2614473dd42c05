"""Casting links and moderated scene rooms (control-plane.md 1.7).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cast_links",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("place_id", sa.String(200), nullable=False),
        sa.Column("place_name", sa.String(200), nullable=False),
        sa.Column("room_id", sa.String(300), nullable=False),
        sa.Column("is_world", sa.Boolean(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(42), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cast_links"),
        sa.UniqueConstraint("key_hash", name="uq_cast_links_key_hash"),
    )
    op.create_index("ix_cast_links_place_id", "cast_links", ["place_id"])
    op.create_table(
        "scene_room_roles",
        sa.Column("room_id", sa.String(300), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("identity", sa.String(200), nullable=False),
        sa.Column("added_by", sa.String(42), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "role", "identity", name="pk_scene_room_roles"),
    )
    op.create_table(
        "scene_room_settings",
        sa.Column("room_id", sa.String(300), nullable=False),
        sa.Column("place_id", sa.String(200), nullable=False),
        sa.Column("moderated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", name="pk_scene_room_settings"),
    )


def downgrade() -> None:
    op.drop_table("scene_room_settings")
    op.drop_table("scene_room_roles")
    op.drop_index("ix_cast_links_place_id", table_name="cast_links")
    op.drop_table("cast_links")
