"""OGC API – Features Part 4 (create, replace, update, delete) for the layers officers keep.

``POST /ogc/collections/{id}/items`` (201 + ``Location``), ``PUT`` / ``PATCH`` /
``DELETE /ogc/collections/{id}/items/{featureId}`` (204).  Bodies are GeoJSON (PATCH:
a Feature or ``{"properties": {...}, "geometry": ...}`` with only what changes);
``Content-Crs`` names the CRS of the geometry (default CRS84), in that CRS's axis
order.  Every write needs a bearer token of an officer (:mod:`api.auth`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.auth import principal
from api.faults import BodyTooLarge
from gis.crs import CRS84_URI, ogc_crs
from layers import edits
from layers.errors import InvalidInput, NotFound
from layers.registry import LAYERS

router = APIRouter(tags=["OGC API Features Part 4"])

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
)
JSON_TYPES = ("application/geo+json", "application/json", "application/merge-patch+json")
MAX_BODY = 16 * 1024 * 1024


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"the body holds {name}, which is not a JSON number")


async def _body(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in JSON_TYPES:
        raise InvalidInput(f"Content-Type {kind or '(none)'!r} is not accepted; send "
                           "application/geo+json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge(MAX_BODY)  # 413 before anything is read
    chunks, seen = [], 0
    async for chunk in request.stream():  # chunked: counted as it comes
        seen += len(chunk)
        if seen > MAX_BODY:
            raise BodyTooLarge(MAX_BODY)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def _crs(request: Request) -> tuple[int, bool]:
    return ogc_crs(request.headers.get("content-crs") or CRS84_URI)


def _fid(feature_id: str) -> int:
    if not feature_id.isdigit() or len(feature_id) > 12:
        raise NotFound(f"no feature {feature_id!r}")
    return int(feature_id)


def _base(request: Request) -> str:
    public = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


@router.post("/ogc/collections/{collection_id}/items", status_code=201,
             summary="Add a feature (officers)", response_model=None)
async def create_item(request: Request, collection_id: str) -> JSONResponse:
    await principal(request, "officer")
    edits.writable_layer(collection_id, create=True)
    doc = await _body(request)
    srid, swap = _crs(request)
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        fid = await edits.create(conn, collection_id, doc, srid, swap)
    where = f"{_base(request)}/ogc/collections/{collection_id}/items/{fid}"
    return JSONResponse({"id": fid, "href": where}, status_code=201,
                        headers={"Location": where})


Edit = Callable[[AsyncConnection[Any], str, int, Any, int, bool], Awaitable[None]]


async def _edit(request: Request, collection_id: str, feature_id: str, edit: Edit,
                create: bool) -> Response:
    """PUT and PATCH: an officer's ``edit`` (``edits.replace`` / ``edits.update``) of one
    feature with the request's body in its ``Content-Crs``; ``create``: the layer must
    take whole features (PUT), not only changes of some columns."""
    await principal(request, "officer")
    fid = _fid(feature_id)
    edits.writable_layer(collection_id, create=create)
    doc = await _body(request)
    srid, swap = _crs(request)
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        await edit(conn, collection_id, fid, doc, srid, swap)
    return Response(status_code=204)


@router.put("/ogc/collections/{collection_id}/items/{feature_id}", status_code=204,
            summary="Replace a feature (officers)", response_model=None)
async def replace_item(request: Request, collection_id: str, feature_id: str) -> Response:
    return await _edit(request, collection_id, feature_id, edits.replace, create=True)


@router.patch("/ogc/collections/{collection_id}/items/{feature_id}", status_code=204,
              summary="Change some properties of a feature (officers)", response_model=None)
async def update_item(request: Request, collection_id: str, feature_id: str) -> Response:
    return await _edit(request, collection_id, feature_id, edits.update, create=False)


@router.delete("/ogc/collections/{collection_id}/items/{feature_id}", status_code=204,
               summary="Delete a feature (officers)", response_model=None)
async def delete_item(request: Request, collection_id: str, feature_id: str) -> Response:
    await principal(request, "officer")
    fid = _fid(feature_id)
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        await edits.delete(conn, collection_id, fid)
    return Response(status_code=204)


# -- OPTIONS: what a client may do (QGIS 3.32+ enables editing from the Allow header) -----

READ_METHODS = ("GET", "HEAD", "OPTIONS")
OPTIONS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "no body; the header Allow lists the methods"},
    404: {"description": "no such collection",
          "content": {"application/problem+json": {"schema": {"type": "object"}}}},
}


async def _known(request: Request, collection_id: str) -> None:
    from api.ogc.features import _catalog

    if collection_id not in await _catalog(request.app.state.ogc):
        raise NotFound(f"no collection {collection_id!r}")


@router.options("/ogc/collections/{collection_id}/items",
                summary="The methods the collection's items take (Allow)", response_model=None,
                responses=OPTIONS_RESPONSES)
async def items_options(request: Request, collection_id: str) -> Response:
    """``Allow`` lists POST for a layer officers add features to (creating still needs an
    officer's token). QGIS reads it to offer editing."""
    await _known(request, collection_id)
    layer = LAYERS.get(collection_id)
    more = ("POST",) if layer is not None and layer.creatable else ()
    return Response(status_code=200, headers={"Allow": ", ".join(READ_METHODS + more)})


@router.options("/ogc/collections/{collection_id}/items/{feature_id}",
                summary="The methods one feature takes (Allow)", response_model=None,
                responses=OPTIONS_RESPONSES)
async def item_options(request: Request, collection_id: str, feature_id: str) -> Response:
    """``Allow``: PUT and DELETE where features are kept whole by officers, PATCH where
    some of their properties are editable."""
    await _known(request, collection_id)
    layer = LAYERS.get(collection_id)
    more: tuple[str, ...] = ()
    if layer is not None and layer.creatable:
        more += ("PUT", "DELETE")
    if layer is not None and layer.editable:
        more += ("PATCH",)
    return Response(status_code=200, headers={"Allow": ", ".join(READ_METHODS + more)})
