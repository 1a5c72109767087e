"""The vramwatch page: a small FastAPI app, server-rendered, that reads the warehouse. It needs no Airflow.

HTTP only: the page's data (vramwatch.report.dashboard) and its charts (vramwatch.report.history_chart, drawn by the
report's own figure template) are built in the report stage; this module routes, renders templates and serves files.

Airflow's API server mounts it through plugins/vramwatch_plugin.py; `uvicorn --factory vramwatch.ui.app:create_app`
serves it alone. Every link in the page is relative, so it works under any mount prefix and behind Airflow's
base_url. The warehouse is opened on the first request, not at import: the plugin is imported by every Airflow
component at start, and a database that is down must not stop the API server.

Who may see it is the caller's decision: `authenticate` runs before every request, the report files included, and
refuses one by raising HTTPException. The plugin passes Airflow's own sign-in check; served alone, the page is open
to whoever reaches its port.

It also serves the published static site (vramwatch.report.site) under /site/, signed in and with the same headers.

Everything it serves, report files and Great Expectations Data Docs included, runs on the Airflow origin, so every
response carries a Content-Security-Policy that lets no script run at all (the page needs none; Data Docs' own
scripts and CDN styles are blocked with the rest) and X-Content-Type-Options: nosniff.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from vramwatch.errors import UserError
from vramwatch.records import config_name
from vramwatch.report.style import CSP_HASH as REPORT_STYLE_HASH
from vramwatch.report.style import TEMPLATES as REPORT_TEMPLATES

if TYPE_CHECKING:
    from vramwatch.warehouse.store import Warehouse

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",  # no script, frame, font or connection from anywhere, this origin included
    f"style-src 'self' {REPORT_STYLE_HASH}",  # the page's stylesheet, and the report's one inline style block
    "img-src 'self'",  # Data Docs' images (the reports draw their figures as inline SVG)
    "frame-ancestors 'self'",  # Airflow's UI frames the page from its own origin
    "base-uri 'none'",
    "form-action 'self'",  # the build comparison's GET form, to this page
])
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
LATEST_REPORT = "latest.html"
# /api/history pages: a row is about 3 KB of JSON, so the largest page stays under 5 MB whatever the warehouse holds
HISTORY_PAGE, HISTORY_PAGE_MAX = 500, 1000
# Deeper pages are read by cursor (`after`, each page's X-Next-Cursor), which costs the same at any depth: an offset
# reads and drops every row it skips (about 1 s at 100k rows on PostgreSQL, benchmarks/bench_reads.py). A larger offset
# is refused (422) saying so, never handed to the database (a number it cannot hold was a 500).
HISTORY_OFFSET_MAX = 10_000
# What the page renders as a link: http(s) only, so a stored link saying javascript:... stays text.
_WEB_LINK = re.compile(r"https?://[^\s\x00-\x1f\"'<>`]+", re.IGNORECASE)
# Called with every request before it is served; raises HTTPException (401, 403) to refuse it.
Authenticate = Callable[[Request], Awaitable[object]]


def is_web_link(link: object) -> bool:
    """An http(s) URL, the only kind the page renders as a link."""
    return isinstance(link, str) and _WEB_LINK.fullmatch(link) is not None


class _LazyWarehouse:
    """Opens the warehouse once, on first use; a failed open is retried on the next request."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._warehouse: Warehouse | None = None
        self._lock = threading.Lock()

    def get(self) -> Warehouse:
        with self._lock:
            if self._warehouse is None:
                from vramwatch.warehouse.store import Warehouse

                self._warehouse = Warehouse(self._url)
            return self._warehouse

    def close(self) -> None:
        with self._lock:
            if self._warehouse is not None:
                self._warehouse.close()
                self._warehouse = None


def _report_info(reports_dir: Path) -> dict | None:
    path = reports_dir / LATEST_REPORT
    if not path.is_file():
        return None
    written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return {"href": f"reports/{LATEST_REPORT}", "written": written.strftime("%Y-%m-%d %H:%M UTC")}


def _alerts_off(reports_dir: Path, night: str | None) -> str | None:
    """The night whose alert step found no channel configured (its delivery log says so), else None."""
    if night is None:
        return None
    from vramwatch.alerts.delivery import DeliveryLog

    return night if DeliveryLog.for_night(reports_dir, night).channels() == [] else None


def _unavailable(error: UserError) -> JSONResponse:
    return JSONResponse({"error": error.message, "fix": error.fix}, status_code=503)


def _refused(error: str, fix: str) -> JSONResponse:
    """A request the endpoint cannot answer as asked (422), in the page's one-line error and fix."""
    return JSONResponse({"error": error, "fix": fix}, status_code=422)


def create_app(warehouse_url: str | None = None, reports_dir: Path | None = None,
               authenticate: Authenticate | None = None) -> FastAPI:
    """The page and its JSON endpoints. warehouse_url None = the usual resolution (VRAMWATCH_WAREHOUSE_URL, the
    Airflow connection, or SQLite under data/); reports_dir None = vramwatch.config.Paths().reports;
    authenticate None = no sign-in."""
    if reports_dir is None:
        from vramwatch.config import Paths

        reports_dir = Paths().reports
    warehouse = _LazyWarehouse(warehouse_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        warehouse.close()

    app = FastAPI(title="vramwatch", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if authenticate is not None:
        # A middleware, not a dependency: dependencies never reach the /reports mount.
        @app.middleware("http")
        async def signed_in_only(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            try:
                await authenticate(request)
            except HTTPException as refused:
                return JSONResponse({"error": str(refused.detail), "fix": "sign in to Airflow, then reload this page"},
                                    status_code=refused.status_code)
            return await call_next(request)

    # Added last, so it wraps the sign-in check: refusals carry the headers too.
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    # the report's templates too: the page draws its charts with the report's figure.svg.j2
    templates = Jinja2Templates(env=Environment(loader=FileSystemLoader([TEMPLATES, REPORT_TEMPLATES]),
                                                autoescape=True))
    templates.env.filters["config_name"] = config_name  # an incident lists config ids; people read names
    templates.env.tests["web_link"] = is_web_link
    # The report may link files beside it (plots): serve the folder, not just the one file.
    app.mount("/reports", StaticFiles(directory=reports_dir, check_dir=False), name="reports")
    # The published site (vramwatch publish; the nightly's publish task writes it there), with index.html for /site/
    from vramwatch.pipeline import site_folder

    app.mount("/site", StaticFiles(directory=site_folder(reports_dir), html=True, check_dir=False), name="site")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so database reads never block the event loop
    # of Airflow's API server.
    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, a: str | None = None, b: str | None = None, changed: str | None = None) -> HTMLResponse:
        """The page; `a` and `b` pick the two builds compared (build ids, as its form sends them), `changed`
        (any value) shows only the configs that changed between them."""
        from vramwatch.report.dashboard import load_dashboard  # pandas: only once the page is asked for
        from vramwatch.rows import BY_NAME

        context = {"report": _report_info(reports_dir)}
        try:
            dashboard = load_dashboard(warehouse.get(), build_a=a, build_b=b, changed_only=bool(changed))
        except UserError as error:
            return templates.TemplateResponse(request, "unavailable.html", {**context, "error": error},
                                              status_code=503)
        alerts_off = _alerts_off(reports_dir, dashboard.latest.night if dashboard.latest else None)
        return templates.TemplateResponse(request, "index.html", {  # fields: each figure in its words and unit
            **context, "d": dashboard, "alerts_off": alerts_off, "fields": BY_NAME})

    @app.get("/api/history")
    def api_history(config_id: str | None = None, environment_id: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX)] = HISTORY_PAGE,
                    offset: Annotated[int, Query(ge=0)] = 0, after: str | None = None) -> JSONResponse:
        """History rows (rows.HISTORY_COLUMNS), oldest night first: the `limit` most recent of those older than the
        page whose X-Next-Cursor is `after`, or after skipping the `offset` most recent (up to HISTORY_OFFSET_MAX).
        X-Next-Cursor (and X-Next-Offset while within it) names the next page when there may be one. config_id takes
        a config's id, or its name (model/quant/mode: every series of that name)."""
        from vramwatch.warehouse.store import BadCursor, HistoryCursor

        if offset > HISTORY_OFFSET_MAX or (offset and after):
            return _refused(f"offset {offset}" + (" with after" if after else f" is past {HISTORY_OFFSET_MAX}"),
                            "page deeper with after=<the X-Next-Cursor of the page before>, without offset")
        try:
            page = warehouse.get().history_page(
                config_ids=[config_id] if config_id and "@" in config_id else None,
                config_names=[config_id] if config_id and "@" not in config_id else None,
                environment_ids=[environment_id] if environment_id else None, limit=limit, offset=offset,
                after=HistoryCursor.parse(after) if after else None)
        except BadCursor as error:
            return _refused(error.message, error.fix)
        except UserError as error:
            return _unavailable(error)
        more = {} if page.next is None else {"X-Next-Cursor": page.next.token()} | (
            {"X-Next-Offset": str(offset + limit)} if not after and offset + limit <= HISTORY_OFFSET_MAX else {})
        return JSONResponse(json.loads(page.frame.to_json(orient="records")), headers=more)  # NaN becomes null

    @app.get("/api/incidents")
    def api_incidents(include_resolved: bool = False) -> JSONResponse:
        """Open (and acknowledged) incidents, oldest first; include_resolved=true for all of them."""
        try:
            incidents = warehouse.get().incidents(include_resolved=include_resolved)
        except UserError as error:
            return _unavailable(error)
        return JSONResponse([incident.to_dict() for incident in incidents])

    return app
