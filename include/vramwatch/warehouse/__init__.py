"""The warehouse stage: SQLAlchemy models, Alembic migrations applied on connect, idempotent store, history."""

from vramwatch.warehouse.flatten import flatten
from vramwatch.warehouse.store import HISTORY_COLUMNS, RESULT_COLUMNS, Warehouse, WarehouseError
from vramwatch.warehouse.url import WarehouseConfigError, resolve_url, url_from_airflow_connection

__all__ = [
    "HISTORY_COLUMNS",
    "RESULT_COLUMNS",
    "Warehouse",
    "WarehouseConfigError",
    "WarehouseError",
    "flatten",
    "resolve_url",
    "url_from_airflow_connection",
]
