"""The server bridge's API keys (control-plane.md 5, dclcomms.bridge.keys).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bridge_keys",
        sa.Column("id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("identity", sa.String(80), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("max_bytes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_keys"),
    )


def downgrade() -> None:
    op.drop_table("bridge_keys")
