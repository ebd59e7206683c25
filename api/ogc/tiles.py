"""OGC API - Tiles at ``/ogc``, served by our routes (not pygeoapi's): vector tiles that
PostGIS makes in one statement (:mod:`tiles.mvt`), their metadata and TileJSON.

Per collection, and the same under ``/ogc/tiles`` for the tileset with every layer in
one tile (:func:`tiles.mvt.all_layers_tileset`); ``{tms}`` is ``WebMercatorQuad``::

    /ogc/collections/{collectionId}/tiles                        tilesets (one)
    /ogc/collections/{collectionId}/tiles/{tms}                  tileset metadata
    /ogc/collections/{collectionId}/tiles/{tms}/tilejson.json    TileJSON 3.0.0 (QGIS)
    /ogc/collections/{collectionId}/tiles/{tms}/{z}/{y}/{x}      MVT; 204 when empty
    /ogc/tileMatrixSets/WebMercatorQuad                          OGC 2D TMS 2.0 JSON
    /ogc/tileMatrixSets                                          pygeoapi's list

``{z}/{y}/{x}`` is OGC's tileMatrix/tileRow/tileCol.  pygeoapi's own ``/ogc/TileMatrixSets``
pages stay as they are; its list names ``/ogc/tileMatrixSets`` as itself, served here.
Links start with ``GRIDGOV_PUBLIC_URL`` when set, else with the request's base URL, as
every ``/ogc`` link does.  Faults: unknown collection or tile matrix set 404, a tile
address out of range or not an integer 400, both as problem+json.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tiles import mvt, tilesets
from tiles.errors import InvalidTile
from tiles.tms import MAX_ZOOM, TILE_MATRIX_SETS, TileId, TileMatrixSet, tile_matrix_set

if TYPE_CHECKING:
    from api.ogc import OgcService

CONFORMANCE = tuple(
    f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}"
    for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "dataset-tilesets",
              "mvt")
)
TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
CACHE_CONTROL = "public, max-age=60"  # layers are edited (OGC API Features Part 4)

Collection = Annotated[str, Path(alias="collectionId", description="a collection's id")]
Tms = Annotated[str, Path(alias="tileMatrixSetId", description="WebMercatorQuad")]

_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits, one optional sign


def _parameter(name: str, where: str, description: str, schema: dict[str, Any]
               ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema}


COLLECTION_PARAMETER = _parameter("collectionId", "path", "a collection's id",
                                  {"type": "string"})
TILE_PARAMETERS = [
    _parameter("tileMatrixSetId", "path", "WebMercatorQuad", {"type": "string"}),
    _parameter("tileMatrix", "path", "zoom, 0 to 22",
               {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM}),
    _parameter("tileRow", "path", "row from the north, 0 to 2^zoom - 1",
               {"type": "integer", "minimum": 0}),
    _parameter("tileCol", "path", "column from the west, 0 to 2^zoom - 1",
               {"type": "integer", "minimum": 0}),
    _parameter("f", "query", "format: mvt, the only one (GDAL reads a tile URL that ends in "
               "a number as a directory of tiles: `MVT:...?f=mvt` reads one)",
               {"type": "string", "enum": ["mvt"]}),
]

TILE = "/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"
TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {tilesets.MVT: {}}, "description": "the tile"},
    204: {"description": "nothing in this tile"},
    304: {"description": "the tile has not changed (If-None-Match)"},
    400: {"description": "tile address out of range or not an integer"},
    404: {"description": "unknown collection or tile matrix set"},
}


def router(service: OgcService) -> APIRouter:
    """The Tiles routes of the OGC API that ``service`` mounts at ``/ogc``."""
    r = APIRouter(prefix="/ogc", tags=["OGC API - Tiles"])

    def root(request: Request) -> str:
        return service.root_url(request) + "/ogc"

    @r.get("/tileMatrixSets", summary="Tile matrix sets (pygeoapi's list)",
           response_model=None)
    async def get_tile_matrix_sets(request: Request) -> Response:
        from pygeoapi.api import tiles as pygeoapi_tiles

        return await service.respond(request, pygeoapi_tiles.tilematrixsets)

    @r.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set (OGC 2D TMS 2.0)")
    async def get_tile_matrix_set(tms_id: Tms) -> dict[str, Any]:
        return tile_matrix_set(tms_id).document()

    # -- one collection -------------------------------------------------------------

    @r.get("/collections/{collectionId}/tiles", summary="Tilesets of a collection")
    async def get_collection_tilesets(request: Request, name: Collection) -> dict[str, Any]:
        ts = mvt.collection_tileset(name)
        return _tileset_list(ts, root(request), f"{root(request)}/collections/{ts.id}/tiles")

    @r.get("/collections/{collectionId}/tiles/{tileMatrixSetId}",
           summary="Tileset metadata of a collection")
    async def get_collection_tileset(request: Request, name: Collection, tms_id: Tms
                                     ) -> dict[str, Any]:
        ts, tms = mvt.collection_tileset(name), tile_matrix_set(tms_id)
        collection = f"{root(request)}/collections/{ts.id}"
        links = [*_tileset_links(root(request), f"{collection}/tiles/{tms.id}", tms),
                 {"rel": "collection", "type": "application/json", "title": ts.title,
                  "href": collection}]
        return tilesets.tileset_metadata(ts, tms, links, await _extent(request, ts))

    @r.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json",
           summary="TileJSON 3.0.0 of a collection's tileset (QGIS, MapLibre)")
    async def get_collection_tilejson(request: Request, name: Collection, tms_id: Tms
                                      ) -> dict[str, Any]:
        ts, tms = mvt.collection_tileset(name), tile_matrix_set(tms_id)
        url = f"{root(request)}/collections/{ts.id}/tiles/{tms.id}/{{z}}/{{y}}/{{x}}"
        return tilesets.tilejson(ts, url, await _extent(request, ts))

    @r.get("/collections/{collectionId}/tiles" + TILE, summary="A vector tile of a collection",
           response_class=Response, responses=TILE_RESPONSES,
           openapi_extra={"parameters": [COLLECTION_PARAMETER, *TILE_PARAMETERS]})
    async def get_collection_tile(request: Request) -> Response:
        # parameters read by hand (TILE_PARAMETERS): FastAPI's validation of them cost
        # more than a light tile's own work in the server (see tile_address)
        name = request.path_params["collectionId"]
        return await _tile(request, mvt.collection_tileset(name), *tile_address(request))

    # -- every layer in one tile ----------------------------------------------------

    @r.get("/tiles", summary="Tilesets of the whole dataset (every layer in one tile)")
    async def get_dataset_tilesets(request: Request) -> dict[str, Any]:
        return _tileset_list(mvt.all_layers_tileset(), root(request), f"{root(request)}/tiles")

    @r.get("/tiles/{tileMatrixSetId}", summary="Tileset metadata of the whole dataset")
    async def get_dataset_tileset(request: Request, tms_id: Tms) -> dict[str, Any]:
        ts, tms = mvt.all_layers_tileset(), tile_matrix_set(tms_id)
        links = _tileset_links(root(request), f"{root(request)}/tiles/{tms.id}", tms)
        return tilesets.tileset_metadata(ts, tms, links, await _extent(request, ts))

    @r.get("/tiles/{tileMatrixSetId}/tilejson.json",
           summary="TileJSON 3.0.0 of the whole dataset's tileset (QGIS, MapLibre)")
    async def get_dataset_tilejson(request: Request, tms_id: Tms) -> dict[str, Any]:
        ts, tms = mvt.all_layers_tileset(), tile_matrix_set(tms_id)
        url = f"{root(request)}/tiles/{tms.id}/{{z}}/{{y}}/{{x}}"
        return tilesets.tilejson(ts, url, await _extent(request, ts))

    @r.get("/tiles" + TILE, summary="A vector tile of every layer", response_class=Response,
           responses=TILE_RESPONSES, openapi_extra={"parameters": TILE_PARAMETERS})
    async def get_dataset_tile(request: Request) -> Response:
        return await _tile(request, mvt.all_layers_tileset(), *tile_address(request))

    return r


@asynccontextmanager
async def _reading(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection for one read-only statement, in autocommit: no ``BEGIN`` before
    it and no ``ROLLBACK`` when the pool takes it back (two round trips, 0.6 ms of a
    light tile's 4 ms here); the connection returns to the pool as it came.  The read
    pool: the reader role over the published views (or the replicas)."""
    pool: AsyncConnectionPool = request.app.state.read_pool
    async with pool.connection() as conn:
        if conn.autocommit:
            yield conn
            return
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if not conn.closed:
                await conn.set_autocommit(False)


async def _extent(request: Request, ts: mvt.Tileset) -> tuple[float, float, float, float] | None:
    async with _reading(request) as conn:
        return await mvt.extent(conn, ts)


def tile_address(request: Request) -> tuple[str, int, int, int]:
    """``tileMatrixSetId``, ``tileMatrix``, ``tileRow``, ``tileCol`` of a tile request
    (integers, or :class:`InvalidTile`), its ``f`` checked: what FastAPI's validation of
    :data:`TILE_PARAMETERS` would do, in 2 µs instead of about 0.1 ms."""
    params = request.path_params
    numbers = []
    for name in ("tileMatrix", "tileRow", "tileCol"):
        text = params[name]
        if len(text) > 12 or not _INTEGER.fullmatch(text):
            raise InvalidTile(f"{name}: {text!r} is not an integer", parameter=name)
        numbers.append(int(text))
    f = request.query_params.get("f")
    if f is not None and f != "mvt":
        raise InvalidTile(f"f: {f!r} is not served; mvt is the only tile format",
                          parameter="f")
    return params["tileMatrixSetId"], numbers[0], numbers[1], numbers[2]


async def _tile(request: Request, ts: mvt.Tileset, tms_id: str, z: int, y: int, x: int
                ) -> Response:
    tile_matrix_set(tms_id)  # only WebMercatorQuad: TileId is its address
    tile = TileId(z, x, y)
    data = b""
    if ts.at(z):  # else no layer is drawn at this zoom: no connection taken
        async with _reading(request) as conn:
            data = await mvt.tile(conn, ts, tile)
    headers = {"Cache-Control": CACHE_CONTROL}
    if not data:
        return Response(status_code=204, headers=headers)
    etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
    headers["ETag"] = etag
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=tilesets.MVT, headers=headers)


def _tileset_links(root: str, url: str, tms: TileMatrixSet) -> list[dict[str, Any]]:
    """self, tiling scheme, tiles template, TileJSON of the tileset at ``url``."""
    return [
        {"rel": "self", "type": "application/json", "title": "This tileset", "href": url},
        {"rel": TILING_SCHEME, "type": "application/json",
         "title": f"The {tms.id} tile matrix set", "href": f"{root}/tileMatrixSets/{tms.id}"},
        {"rel": "item", "type": tilesets.MVT, "templated": True,
         "title": "Vector tiles: tileMatrix (zoom) / tileRow / tileCol",
         "href": url + "/{tileMatrix}/{tileRow}/{tileCol}"},
        {"rel": "describedby", "type": "application/json",
         "title": "TileJSON 3.0.0 (an XYZ template for QGIS and MapLibre)",
         "href": url + "/tilejson.json"},
    ]


def _tileset_list(ts: mvt.Tileset, root: str, url: str) -> dict[str, Any]:
    entries = [tilesets.tileset_summary(ts, tms, _tileset_links(root, f"{url}/{tms.id}", tms)[:2])
               for tms in TILE_MATRIX_SETS.values()]
    return {"tilesets": entries,
            "links": [{"rel": "self", "type": "application/json",
                       "title": "This list of tilesets", "href": url}]}
