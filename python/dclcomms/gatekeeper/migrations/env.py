"""Alembic environment of the gatekeeper database (run by dclcomms.gatekeeper.storage).

The caller hands over an open connection in ``config.attributes["connection"]``;
there is no alembic.ini and no URL here. SQLite runs in batch mode so later
revisions can alter columns.
"""

from __future__ import annotations

from alembic import context

from dclcomms.gatekeeper.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
