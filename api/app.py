"""The FastAPI application. ``create_app`` owns every resource; nothing runs at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import (
    auth,
    database,
    faults,
    observability,
    open311,
    pages,
    problems,
    routes_events,
    routes_imagery,
    routes_locate,
    routes_uploads,
    session,
)
from api.ogc import mount as mount_ogc
from api.ogc import transactions
from api.settings import InsecureSettings, Settings, check_production, secret_key
from layers import db, queries, roles
from layers.errors import DatabaseNotReady
from layers.models import personal_columns

TEMPLATES = Path(__file__).with_name("templates")


def create_app(settings: Settings, database_url: str, read_url: str | None = None
               ) -> FastAPI:
    """Build the app for ``database_url`` (already migrated): writes (and the reads of
    personal data) through it, other reads through ``read_url`` (or the replicas); see
    :func:`api.database.server_urls` for the defaults."""
    write_url, read_url = database.server_urls(settings, database_url, read_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = database.new_pool(settings, write_url, "primary")
        reads = database.read_pool(settings, read_url)
        await pool.open(wait=False)
        await reads.open(wait=False)
        app.state.pool, app.state.read_pool = pool, reads  # writes, reads (replicas)
        try:
            yield
        finally:
            observability.mark_process_dead()
            app.state.ogc.close()
            app.state.renderer.close()
            await reads.close()
            await pool.close()

    check_production(settings)  # default secrets outside development: refuse to start
    reads_from = settings.database_replica_urls or [read_url]  # the read pools' URLs
    if settings.env == "production":  # nor as a superuser or the owner
        check_roles(write_url, reads_from)
    secret = secret_key(settings)  # generated once into data_dir outside production
    app = FastAPI(
        title="gridgov",
        description="Grid governance: the three-level grid, its layers and events, "
        "served from PostGIS.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the project's own Swagger UI copy, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.secret_key = secret
    _docs(app)
    head = db.head_revision()  # read the migration scripts once, not per probe
    templates = Jinja2Templates(directory=str(TEMPLATES))
    problems.install(app)
    faults.install(app)
    app.include_router(routes_locate.router)
    app.include_router(routes_events.router)
    routes_imagery.install(app)  # /tiles/imagery, /tiles/changes: raster tiles and COGs
    app.include_router(session.router)  # sign-in by cookie for the phone pages
    app.include_router(open311.router)
    app.include_router(routes_uploads.router)  # GeoTIFF uploads for detect-changes
    auth.install(app)
    app.include_router(transactions.router)  # Part 4 writes, before pygeoapi's routes
    app.state.ogc = mount_ogc(app, settings, write_url,  # pygeoapi at /ogc
                              read_url=reads_from[0])
    pages.install(app)  # /m/... phone map pages, /screen, /static/vendor
    observability.install(app, app.state.ogc.jobs_dir / "jobs.json")
    if settings.cors_origins:  # CORS is off unless origins are configured
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "Location", "ETag",
                                           "Gridgov-Generation"])

    async def summaries(request: Request) -> dict[str, Any]:
        pool: AsyncConnectionPool = request.app.state.read_pool
        async with pool.connection(timeout=5) as conn:
            return {
                "generation": await queries.current_generation(conn),
                "layers": await queries.layer_summaries(conn),
            }

    @app.get("/", summary="Landing page: what this server offers", response_model=None,
             responses={200: {"content": {"application/json": {}, "text/html": {}}},
                        400: {"description": "a bad parameter (problem+json)"}})
    async def landing(request: Request, f: str | None = None) -> Response:
        info = await summaries(request)
        base = str(request.base_url).rstrip("/")
        links = [
            {"rel": "self", "href": f"{base}/", "title": "This page"},
            {"rel": "service-desc", "href": f"{base}/openapi.json", "title": "OpenAPI document"},
            {"rel": "service-doc", "href": f"{base}/docs", "title": "API documentation"},
            {"rel": "locate", "href": f"{base}/locate?lon={{lon}}&lat={{lat}}",
             "title": "Which grid owns a point", "templated": True},
            {"rel": "nearby", "href": f"{base}/nearby?lon={{lon}}&lat={{lat}}&radius={{radius}}",
             "title": "What lies within a radius", "templated": True},
            {"rel": "data", "href": f"{base}/ogc", "type": "application/json",
             "title": "OGC API (Features, Tiles, Processes) for QGIS and GDAL"},
            {"rel": "status", "href": f"{base}/healthz", "title": "Process alive"},
            {"rel": "status", "href": f"{base}/readyz", "title": "Database ready"},
        ]
        body = {"title": "gridgov", "description": app.description, "links": links, **info}
        wants_json = f == "json" or (
            f is None and "text/html" not in request.headers.get("accept", "")
        )
        if wants_json:
            return JSONResponse(body)
        return templates.TemplateResponse(request, "landing.html", body)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The database is reachable and migrated", response_model=None,
             responses={503: {"description": "not ready (problem+json)",
                              "content": {"application/problem+json": {}}}})
    async def readyz(request: Request) -> Response:
        pool: AsyncConnectionPool = request.app.state.read_pool
        try:
            async with pool.connection(timeout=3) as conn:
                cur = await conn.execute(
                    "SELECT (SELECT version_num FROM alembic_version), pg_is_in_recovery()")
                row = await cur.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            return problems.problem(503, "Not ready", f"database unavailable: {exc}")
        current = row[0] if row else None
        debug = {"Gridgov-Read-Replica": str(bool(row and row[1])).lower()} if (
            settings.debug_headers) else None
        if current != head:
            return problems.problem(
                503, "Not ready", f"schema at {current}, code expects {head}: run migrations"
            )
        return JSONResponse({"status": "ready", "schema": current}, headers=debug)

    return app


def _docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the swagger-ui-bundle package; no script leaves the host."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/static/swagger-ui", StaticFiles(directory=str(swagger_ui_path)),
              name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="gridgov API",
            swagger_js_url=f"{root}/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/swagger-ui/favicon-32x32.png",
        )


def check_roles(write_url: str, read_urls: list[str]) -> None:
    """Refuse to serve through a superuser, the database owner or a role that owns tables
    or may create roles or databases, and to read through a role that may read a table
    with personal data.  Run at start-up in production (the database must answer)."""
    faults = []
    try:
        with db.connect(write_url, connect_timeout=10) as conn:
            faults += roles.server_role_faults(conn)
        for url in dict.fromkeys(read_urls):
            with db.connect(url, connect_timeout=10) as conn:
                faults += roles.server_role_faults(conn)
                faults += roles.reader_faults(conn, sorted(personal_columns()))
    except DatabaseNotReady as exc:
        raise InsecureSettings(f"refusing to start: cannot check the database roles: {exc}"
                               ) from exc
    if faults:
        raise InsecureSettings("refusing to start with GRIDGOV_ENV=production: "
                               + "; ".join(dict.fromkeys(faults)))
