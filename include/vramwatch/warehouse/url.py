"""Which database the warehouse lives in.

VRAMWATCH_WAREHOUSE_URL wins; else the Airflow connection `vramwatch_warehouse` when Airflow passes it as the
environment variable AIRFLOW_CONN_VRAMWATCH_WAREHOUSE (URI or JSON form, parsed here: the library never imports
Airflow); else SQLite under the repo's data/ (vramwatch.config.warehouse_url).
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from vramwatch import config
from vramwatch.errors import UserError
from vramwatch.redact import redact

AIRFLOW_CONN_ENV = "AIRFLOW_CONN_VRAMWATCH_WAREHOUSE"
# Airflow connection types -> SQLAlchemy drivers we ship (psycopg2-binary is in requirements).
DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "sqlite": "sqlite"}


class WarehouseConfigError(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, f"set VRAMWATCH_WAREHOUSE_URL to a SQLAlchemy URL, or fix {AIRFLOW_CONN_ENV} "
                                  "(e.g. postgres://host:5432/warehouse with login:password@ before the host)")


def resolve_url(url: str | None = None) -> str:
    """The warehouse's SQLAlchemy URL, checked (`checked_url`)."""
    if url:
        return checked_url(url)
    if os.environ.get("VRAMWATCH_WAREHOUSE_URL"):
        return checked_url(config.warehouse_url())
    airflow_conn = os.environ.get(AIRFLOW_CONN_ENV)
    if airflow_conn:
        return checked_url(url_from_airflow_connection(airflow_conn))
    return checked_url(config.warehouse_url())


def checked_url(url: str) -> str:
    """`url` when SQLAlchemy can open it; else one line naming what is wrong (a bad port, an unknown driver, the
    `postgres://` of Airflow and Heroku), its password masked, instead of SQLAlchemy's traceback."""
    shown = redact(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise WarehouseConfigError(f"warehouse URL {shown} is not a SQLAlchemy URL: {exc}") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise WarehouseConfigError(f"warehouse URL {shown} has port {parsed.port}, not one of 1-65535")
    if parsed.drivername in ("postgres", "postgres+psycopg2"):
        raise WarehouseConfigError(f"warehouse URL {shown} says postgres://, which SQLAlchemy does not know: "
                                   "write postgresql+psycopg2://")
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise WarehouseConfigError(f"warehouse URL {shown} names the driver {parsed.drivername!r}, which is not "
                                   "installed; the warehouse runs on postgresql+psycopg2 or sqlite") from None
    return url


def url_from_airflow_connection(value: str) -> str:
    """An Airflow connection (URI `postgres://login:password@host:port/schema` or its JSON form) as a SQLAlchemy URL."""
    value = value.strip()
    if value.startswith("{"):
        try:
            fields = json.loads(value)
        except json.JSONDecodeError as exc:
            raise WarehouseConfigError(f"{AIRFLOW_CONN_ENV} is not valid JSON: {exc}") from None
        conn_type, login, password = fields.get("conn_type", ""), fields.get("login"), fields.get("password")
        host, port, schema = fields.get("host"), fields.get("port"), fields.get("schema")
    else:
        parts = urlsplit(value)
        conn_type = parts.scheme
        if conn_type == "sqlite":  # Airflow keeps the file path URL-encoded in the host; SQLAlchemy style has none
            return f"sqlite:///{unquote(parts.netloc)}" if parts.netloc else value
        login = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        host = unquote(parts.hostname) if parts.hostname else None
        port, schema = parts.port, unquote(parts.path.lstrip("/")) or None  # query (Airflow extras) is ignored
    driver = DRIVERS.get(conn_type)
    if driver is None:
        raise WarehouseConfigError(f"{AIRFLOW_CONN_ENV} has connection type {conn_type!r}; "
                                   f"the warehouse supports {', '.join(sorted(DRIVERS))}")
    if driver == "sqlite":
        return f"sqlite:///{host}"
    return URL.create(driver, username=login, password=password, host=host, port=int(port) if port else None,
                      database=schema).render_as_string(hide_password=False)
