"""Our routes for the OGC API – Features data paths, at pygeoapi's URLs.

``GET /ogc/collections/{collectionId}/items`` and ``.../items/{featureId}``: the request
is parsed by the engine (:mod:`layers.features`) whatever the format, so bad input is
the same 400 everywhere.  GeoJSON (``f=json``, ``f=geojson``, or no ``f`` and no
browser ``Accept``) is the fast path: one statement on the app's async pool, and the
text PostGIS made goes out as it came (no JSON parse or dump here).  Every other
format (HTML, JSON-LD, CSV) is pygeoapi's, rendered from the same query through our
provider (:mod:`api.ogc.provider`, which gets the parsed query through its ``CALL``).

Links copy pygeoapi's (rels, titles, query strings), so the two doors answer alike:
alternates ``?f=json|jsonld|html`` with the request's parameters but ``f`` and
``offset``, ``collection``, and paging as ``offset`` links (``prev``, as pygeoapi
makes it) and ``offset`` + keyset ``cursor`` links (``next``).  The exceptions, from
pygeoapi's own paging logic on the pages it renders: a last page that is exactly
full gets a ``next`` link to an empty page there, and a request with a ``cursor`` but
no ``offset`` (which our links never make) gets pygeoapi's offset links.  pygeoapi
never sees ``filter``/``filter-lang``/``filter-crs`` (it would parse CQL2 as ECQL and
refuse ``cql2-text``); the provider filters, and pygeoapi's own links on those pages
(alternates, last-page ``prev``) lack the filter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.ogc.provider import CALL, ItemsCall
from api.problems import STATUS
from layers import features as engine
from layers.errors import DatabaseNotReady, InvalidInput, LayersError, NotFound

if TYPE_CHECKING:
    from api.ogc import OgcService

log = logging.getLogger("gridgov.api")
GEOJSON = "application/geo+json"
FILTER_PARAMS = ("filter", "filter-lang", "filter-crs")

FEATURES = "http://www.opengis.net/spec/ogcapi-features-{}/1.0/conf/{}"
# what the collections declare (pygeoapi's list less Part 4, which no collection offers
# yet, and Part 5, which is not exercised here)
CONFORMANCE_CLASSES = (
    FEATURES.format(1, "core"),
    FEATURES.format(1, "oas30"),
    FEATURES.format(1, "html"),
    FEATURES.format(1, "geojson"),
    FEATURES.format(2, "crs"),
    FEATURES.format(3, "queryables"),
    FEATURES.format(3, "queryables-query-parameters"),
    FEATURES.format(3, "filter"),
    FEATURES.format(3, "features-filter"),
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
)

Endpoint = Callable[[Request], Awaitable[Response]]


def routes(service: OgcService) -> list[tuple[str, Endpoint, list[str]]]:
    """The data paths, to be added before pygeoapi's routes for the same paths."""

    async def items(request: Request) -> Response:
        return await _items(service, request, request.path_params["collection_id"])

    async def item(request: Request) -> Response:
        return await _item(service, request, request.path_params["collection_id"],
                           request.path_params["feature_id"])

    return [
        ("/ogc/collections/{collection_id}/items", items, ["GET"]),
        ("/ogc/collections/{collection_id}/items/{feature_id}", item, ["GET"]),
    ]


# -- the two routes ----------------------------------------------------------------------------


async def _items(service: OgcService, request: Request, cid: str) -> Response:
    from pygeoapi.api import itemtypes

    fmt = _format(request)
    try:
        coll = (await _catalog(service)).get(cid)
        if coll is None:  # pygeoapi answers 404 in the format asked for
            return await service.respond(
                request, lambda api, req: itemtypes.get_collection_items(api, req, cid))
        params = list(request.query_params.items())
        query = engine.parse_items(coll, dict(params))
        engine.check_bbox_area(query, request.app.state.settings.max_bbox_km2)
        uri = f"{service.root_url(request)}/ogc/collections/{cid}/items"
        if fmt in ("json", "geojson"):
            links = await _page_links(service, request, coll, uri, params, query, fmt)
            async with _pool(request).connection(timeout=5) as conn:
                body = await engine.items_page(conn, coll, query, links)
            return Response(body, media_type=GEOJSON,
                            headers={"Content-Crs": f"<{query.crs.uri}>"})
    except LayersError as exc:
        return await _fault(service, request, fmt, exc)
    except psycopg.errors.QueryCanceled:
        return _timeout(request)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        return await _fault(service, request, fmt, DatabaseNotReady(str(exc)))
    call = items_call(cid, uri, params, query)
    return await service.respond(_without(request, FILTER_PARAMS),
                                 lambda api, req: pygeoapi_items(api, req, call))


def items_call(cid: str, uri: str, params: list[tuple[str, str]], query: engine.ItemsQuery
               ) -> ItemsCall:
    """What the provider runs for pygeoapi: ``query``, with the paging links only: the
    alternates and ``collection`` are pygeoapi's, and so is ``prev`` on a last page
    (pygeoapi adds its own when no ``next`` came from the provider)."""
    links = _paging(uri, params, query, rest=(), last=())
    return ItemsCall(cid, query, replace(links, without_next=()))


def pygeoapi_items(api: Any, request: Any, call: ItemsCall) -> Any:
    """pygeoapi's items page (its ``get_collection_items``) of ``call`` (blocking)."""
    from pygeoapi.api import itemtypes

    token = CALL.set(call)
    try:
        return itemtypes.get_collection_items(api, request, call.collection)
    finally:
        CALL.reset(token)


async def _item(service: OgcService, request: Request, cid: str, fid: str) -> Response:
    from pygeoapi.api import itemtypes

    fmt = _format(request)
    try:
        coll = (await _catalog(service)).get(cid)
        if coll is None or fmt not in ("json", "geojson"):
            if coll is not None:
                engine.parse_crs(request.query_params)  # the same 400 as the JSON path
            return await service.respond(
                request, lambda api, req: itemtypes.get_collection_item(api, req, cid, fid))
        crs = engine.parse_crs(request.query_params)
        links = await _item_links(service, request, coll, fid, fmt)
        number = engine.feature_id(fid)
        async with _pool(request).connection(timeout=5) as conn:
            body = await engine.item(conn, coll, number, crs, links)
        return Response(body, media_type=GEOJSON, headers={"Content-Crs": f"<{crs.uri}>"})
    except LayersError as exc:
        return await _fault(service, request, fmt, exc)
    except psycopg.errors.QueryCanceled:
        return _timeout(request)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        return await _fault(service, request, fmt, DatabaseNotReady(str(exc)))


# -- helpers -------------------------------------------------------------------------------------


def _pool(request: Request) -> AsyncConnectionPool:
    """The read pool: the reader role over the published views (or the replicas)."""
    pool: AsyncConnectionPool = request.app.state.read_pool
    return pool


async def _catalog(service: OgcService) -> Mapping[str, engine.Collection]:
    loaded = service.source.loaded
    return loaded if loaded is not None else await run_in_threadpool(service.source.catalog)


def _format(request: Request) -> str:
    """``json``/``geojson`` for the fast path, else what pygeoapi would make of it."""
    f = request.query_params.get("f")
    if f:
        return f.strip().lower()
    accept = request.headers.get("accept", "")
    first = min(((accept.find(m), name) for m, name in (
        ("text/html", "html"), ("application/ld+json", "jsonld"), (GEOJSON, "json"),
        ("application/json", "json")) if m in accept), default=(0, "json"))
    return first[1]


def _serialize(params: Iterable[tuple[str, str]], drop: Iterable[str]) -> str:
    """The query string as pygeoapi appends it to its links (``&k=v`` each)."""
    skip = set(drop)
    return "".join(f"&{quote(k, safe='')}={quote(str(v), safe=',')}"
                   for k, v in params if k not in skip)


def _paging(uri: str, params: list[tuple[str, str]], query: engine.ItemsQuery,
            rest: Iterable[Mapping[str, Any]], last: Iterable[Mapping[str, Any]]
            ) -> engine.PageLinks:
    """``next`` (offset + cursor) and ``prev`` (offset), placed as pygeoapi places them
    around the ``rest`` of a page's links (``last`` ends them)."""
    prev = []
    if query.offset > 0:
        prev = [{"type": GEOJSON, "rel": "prev", "title": "Items (prev)",
                 "href": f"{uri}?offset={max(0, query.offset - query.limit)}"
                         f"{_serialize(params, ('f', 'offset'))}"}]
    rest, last = list(rest), list(last)
    return engine.PageLinks(
        next={"type": GEOJSON, "rel": "next", "title": "Items (next)"},
        next_href=f"{uri}?offset={query.offset + query.limit}"
                  f"{_serialize(params, ('f', 'offset', 'cursor'))}&cursor=",
        with_next=[*prev, *rest, *last],
        without_next=[*rest, *prev, *last],
    )


def _rel(fmt: str, this: str) -> str:
    return "self" if fmt == this or (this == "json" and fmt == "geojson") else "alternate"


def _title(service: OgcService, request: Request, coll: engine.Collection) -> str:
    """The collection's title in the request's language (``lang``, then Accept-Language),
    as pygeoapi would pick it from our two (English first), without building pygeoapi's
    whole request object on every page (it cost about 0.3 ms)."""
    lang = request.query_params.get("lang") or request.headers.get("accept-language", "")
    return coll.layer.title_zh if lang.strip().lower().startswith("zh") else coll.layer.title


async def _page_links(service: OgcService, request: Request, coll: engine.Collection, uri: str,
                      params: list[tuple[str, str]], query: engine.ItemsQuery, fmt: str
                      ) -> engine.PageLinks:
    return items_links(uri, params, query, fmt, _title(service, request, coll))


def items_links(uri: str, params: list[tuple[str, str]], query: engine.ItemsQuery, fmt: str,
                title: str) -> engine.PageLinks:
    """Every link of a GeoJSON items page of ours (what the route hands the statement):
    the paging links around pygeoapi's alternates and ``collection`` link."""
    same = _serialize(params, ("f", "offset"))
    alternates = [
        {"type": GEOJSON, "rel": _rel(fmt, "json"), "title": "This document as GeoJSON",
         "href": f"{uri}?f=json{same}"},
        {"rel": _rel(fmt, "jsonld"), "type": "application/ld+json",
         "title": "This document as RDF (JSON-LD)", "href": f"{uri}?f=jsonld{same}"},
        {"type": "text/html", "rel": _rel(fmt, "html"), "title": "This document as HTML",
         "href": f"{uri}?f=html{same}"},
    ]
    collection = {"type": "application/json", "title": title, "rel": "collection",
                  "href": uri.rsplit("/", 1)[0]}
    return _paging(uri, params, query, alternates, [collection])


async def _item_links(service: OgcService, request: Request, coll: engine.Collection, fid: str,
                      fmt: str) -> list[dict[str, str]]:
    base = f"{service.root_url(request)}/ogc"
    uri = f"{base}/collections/{coll.name}/items/{fid}"
    return [
        {"type": "application/json", "rel": "root",
         "title": "The landing page of this server as JSON", "href": f"{base}?f=json"},
        {"type": "text/html", "rel": "root",
         "title": "The landing page of this server as HTML", "href": f"{base}?f=html"},
        {"rel": _rel(fmt, "json"), "type": GEOJSON, "title": "This document as JSON",
         "href": f"{uri}?f=json"},
        {"rel": _rel(fmt, "jsonld"), "type": "application/ld+json",
         "title": "This document as RDF (JSON-LD)", "href": f"{uri}?f=jsonld"},
        {"rel": _rel(fmt, "html"), "type": "text/html", "title": "This document as HTML",
         "href": f"{uri}?f=html"},
        {"rel": "collection", "type": "application/json",
         "title": _title(service, request, coll), "href": f"{base}/collections/{coll.name}"},
    ]


def _without(request: Request, names: Iterable[str]) -> Request:
    """``request`` without the query parameters ``names``."""
    drop = set(names)
    if not drop & set(request.query_params):
        return request
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in drop]
    scope = {**request.scope, "query_string": urlencode(kept).encode()}
    return Request(scope, request.receive)


def _timeout(request: Request) -> Response:
    """A statement cancelled by ``statement_timeout`` (a ``QueryCanceled``, which psycopg
    files under ``OperationalError``: not a database that is down): 504 as an OGC
    exception naming the limit."""
    ms = request.app.state.settings.statement_timeout_ms
    log.warning("%s %s: statement cancelled after %d ms", request.method, request.url.path, ms)
    text = (f"the query ran longer than the {ms} ms allowed per statement; ask for less "
            "(a smaller page, bbox or filter)")
    return JSONResponse({"code": "NoApplicableCode", "type": "NoApplicableCode",
                         "description": text, "limit_ms": ms}, status_code=504)


async def _fault(service: OgcService, request: Request, fmt: str, exc: LayersError) -> Response:
    """An OGC exception (pygeoapi's shape: code, type, description) naming the parameter."""
    status, title = next(((s, t) for kind, s, t in STATUS if isinstance(exc, kind)),
                         (500, "Server error"))
    if isinstance(exc, NotFound):
        code, text = "NotFound", str(exc)
    elif isinstance(exc, InvalidInput):
        code, text = "InvalidParameterValue", str(exc)
    elif isinstance(exc, DatabaseNotReady):
        code, text = "NoApplicableCode", "the database is unavailable; retry later"
    else:
        code, text = "NoApplicableCode", f"{title}; the server log has the details"
    if fmt not in ("json", "geojson"):
        from pygeoapi.api import SYSTEM_LOCALE

        def page(api: Any, req: Any) -> Any:
            headers = req.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
            return api.get_exception(status, headers, req.format, code, text)

        return await service.respond(request, page)
    body = {"code": code, "type": code, "description": text, **exc.extensions}
    return JSONResponse(body, status_code=status)
