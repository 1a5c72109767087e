"""Alembic environment: the engine comes from vramwatch.warehouse.migrate, never from a config file."""

from alembic import context
from sqlalchemy import text

from vramwatch.warehouse.migrate import VERSION_TABLE
from vramwatch.warehouse.models import Base

# Any fixed number: on PostgreSQL, processes opening a fresh warehouse at once migrate one after the other.
MIGRATION_LOCK = 0x76726D77

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()
