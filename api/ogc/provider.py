"""pygeoapi's door to the features engine: :class:`GridgovProvider` and its databases.

pygeoapi builds a provider for every call from the collection's configuration, and it
hands that configuration to every HTML template, so the configuration names the
database by an opaque token (``data``): :func:`register` keeps a :class:`Source` (the
URL, a small pool of blocking connections, the catalog read once) under it.

``query``/``get`` call :mod:`layers.features`, the engine our own routes call, and
parse its page into the dict pygeoapi expects.  Two ways in:

- Inside our items route (HTML, JSON-LD pages): the route has already parsed the
  request with the engine and puts that :class:`~layers.features.ItemsQuery` and the
  paging links in :data:`CALL` for the worker thread; the provider runs exactly that
  query, so the page matches the JSON route's feature for feature and link for link.
  pygeoapi's own parsing cannot carry it: its ``bbox`` arrives transformed (by two
  corners, in the storage CRS's lat/lon order), its ``filter`` is ECQL (CQL2 is refused
  as "Bad CQL text"), and a keyset cursor is no parameter it knows.
- Anywhere else (pygeoapi called directly, tests): pygeoapi's parsed arguments are
  mapped back onto the engine's parameters; paging is then pygeoapi's own (``offset``).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderConnectionError,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
)

from layers import db
from layers import features as engine
from layers.errors import DatabaseNotReady, InvalidInput, NotFound

POOL_MAX = 4  # pygeoapi's calls run in the server's worker threads


class Source:
    """One database as pygeoapi's providers reach it."""

    def __init__(self, database_url: str, options: str = db.SESSION_OPTIONS) -> None:
        self._url = db.libpq_url(database_url)
        self._options = options  # libpq options of every connection (timeout, search path)
        found = re.search(r"statement_timeout=(\d+)", options)
        self.statement_timeout_ms = int(found.group(1)) if found else None
        self._pool: ConnectionPool | None = None
        self._catalog: Mapping[str, engine.Collection] | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def loaded(self) -> Mapping[str, engine.Collection] | None:
        """The catalog if it has been read, else None (never blocks)."""
        return self._catalog

    def catalog(self) -> Mapping[str, engine.Collection]:
        """Column types and extents of the published layers, read on first use (blocks).

        Read over a connection of its own with a short timeout, so a server whose
        database is down starts (and answers 503 on the data paths) rather than hangs."""
        with self._lock:
            if self._catalog is None:
                with db.connect(self._url, connect_timeout=5,
                                options=self._options) as conn:
                    self._catalog = engine.load_catalog(conn)
            return self._catalog

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            if self._closed:
                raise DatabaseNotReady("the server is stopping")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._url, min_size=0, max_size=POOL_MAX, open=False,
                    kwargs={"options": self._options, "application_name": "gridgov-ogc",
                            "autocommit": True})
                self._pool.open(wait=False)
            pool = self._pool
        try:
            with pool.connection(timeout=10) as conn:
                yield conn
        except psycopg.errors.QueryCanceled:  # statement_timeout: not a database that is down
            raise
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DatabaseNotReady(f"the database is unavailable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


_SOURCES: dict[str, Source] = {}
_SOURCES_LOCK = threading.Lock()


def register(source: Source) -> str:
    """Keep ``source`` under a new opaque token (the providers' ``data``)."""
    token = "gridgov:" + secrets.token_urlsafe(12)
    with _SOURCES_LOCK:
        _SOURCES[token] = source
    return token


def unregister(token: str) -> None:
    with _SOURCES_LOCK:
        _SOURCES.pop(token, None)


@dataclass(frozen=True)
class ItemsCall:
    """An items request our route has parsed, for the provider pygeoapi calls next."""

    collection: str
    query: engine.ItemsQuery
    links: engine.PageLinks  # the paging links (pygeoapi adds its alternates)


CALL: ContextVar[ItemsCall | None] = ContextVar("gridgov_items_call", default=None)

# JSON Schema of a column, as pygeoapi's queryables and schema pages show it
FIELD_TYPES: Mapping[str, dict[str, str]] = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}


class GridgovProvider(BaseProvider):  # type: ignore[misc] - pygeoapi is untyped
    """A published layer as pygeoapi's feature provider (read-only)."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        source = _SOURCES.get(self.data)
        if source is None:
            raise ProviderConnectionError("this collection's database is not open")
        self.source = source
        try:
            self.collection = source.catalog()[provider_def["table"]]
        except DatabaseNotReady as exc:
            raise _unavailable() from exc
        self.get_fields()

    def get_fields(self) -> dict[str, dict[str, str]]:
        # a fresh dict each time: pygeoapi's schema page edits what it is given
        self._fields = {c: dict(FIELD_TYPES[self.collection.types[c]])
                        for c in self.collection.layer.columns}
        return self._fields

    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results",
              bbox: list[float] | None = None, datetime_: str | None = None,
              properties: list[tuple[str, str]] | None = None,
              sortby: list[dict[str, str]] | None = None,
              select_properties: list[str] | None = None, skip_geometry: bool = False,
              q: str | None = None, filterq: Any = None, crs_transform_spec: Any = None,
              **kwargs: Any) -> dict[str, Any]:
        call = CALL.get()
        if call is not None and call.collection == self.collection.name:
            query, links = call.query, call.links
        else:
            params = _engine_params(offset, limit, bbox, datetime_, properties, sortby,
                                    select_properties, skip_geometry, crs_transform_spec)
            if filterq is not None:
                raise ProviderInvalidQueryError(
                    user_msg="filter: pygeoapi's parser reads ECQL; send CQL2 filters to "
                             "the items route")
            if q:
                raise ProviderInvalidQueryError(user_msg="q: free-text search is not offered")
            query, links = self._parse(params), None
        with self._errors():
            with self.source.connection() as conn:
                text = engine.items_page_sync(conn, self.collection, query, links)
        page: dict[str, Any] = json.loads(text)
        if links is None:
            page["links"] = []  # pygeoapi pages by offset itself
        if resulttype == "hits":
            page["features"], page["numberReturned"] = [], 0
        return page

    def get(self, identifier: Any, crs_transform_spec: Any = None,
            **kwargs: Any) -> dict[str, Any]:
        crs = _target_crs(crs_transform_spec)
        with self._errors():
            fid = engine.feature_id(str(identifier))
            with self.source.connection() as conn:
                text = engine.item_sync(conn, self.collection, fid, engine.crs_of(crs))
        feature: dict[str, Any] = json.loads(text)
        return feature

    def _parse(self, params: dict[str, str]) -> engine.ItemsQuery:
        with self._errors():
            return engine.parse_items(self.collection, params)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The engine's faults as pygeoapi's (which it answers as OGC exceptions)."""
        try:
            yield
        except NotFound as exc:
            raise ProviderItemNotFoundError(user_msg=str(exc)) from exc
        except InvalidInput as exc:
            raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
        except DatabaseNotReady as exc:
            raise _unavailable() from exc
        except psycopg.errors.QueryCanceled as exc:
            raise _timed_out(self.source.statement_timeout_ms) from exc

    def __repr__(self) -> str:
        return f"<GridgovProvider> {self.collection.name}"


def _timed_out(ms: int | None) -> ProviderConnectionError:
    """A statement cancelled by ``statement_timeout``: 504, naming the limit (as our own
    items route answers it)."""
    limit = f"the {ms} ms allowed per statement" if ms else "the time allowed per statement"
    err = ProviderConnectionError(
        user_msg=f"the query ran longer than {limit}; ask for less (a smaller page, bbox or "
                 "filter)")
    err.http_status_code = 504
    return err


def _unavailable() -> ProviderConnectionError:
    err = ProviderConnectionError(user_msg="the database is unavailable; retry later")
    err.http_status_code = 503
    return err


def _target_crs(spec: Any) -> str:
    """The output CRS of a pygeoapi call.  pygeoapi passes no transformation when the
    CRS asked for is the storage CRS (EPSG:4490), and CRS84 when none was asked for."""
    return engine.STORAGE_CRS_URI if spec is None else str(spec.target_crs_uri)


def _engine_params(offset: int, limit: int, bbox: list[float] | None, datetime_: str | None,
                   properties: list[tuple[str, str]] | None,
                   sortby: list[dict[str, str]] | None, select_properties: list[str] | None,
                   skip_geometry: bool, crs_transform_spec: Any) -> dict[str, str]:
    """pygeoapi's parsed arguments as the query parameters the engine reads."""
    params = {"limit": str(limit), "crs": _target_crs(crs_transform_spec)}
    if offset:
        params["offset"] = str(offset)
    if bbox:
        # pygeoapi has transformed the bbox to the storage CRS, in its axis order (lat/lon)
        params["bbox"] = ",".join(repr(float(v)) for v in bbox)
        params["bbox-crs"] = engine.STORAGE_CRS_URI
    if datetime_:
        params["datetime"] = datetime_
    for name, value in properties or []:
        params[name] = value
    if sortby:
        params["sortby"] = ",".join(s["order"] + s["property"] for s in sortby)
    if select_properties:
        params["properties"] = ",".join(select_properties)
    if skip_geometry:
        params["skipGeometry"] = "true"
    return params
