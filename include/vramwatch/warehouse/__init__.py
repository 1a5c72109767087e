"""The warehouse stage: SQLAlchemy models, Alembic migrations applied on connect, idempotent store, history."""
