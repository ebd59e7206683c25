"""Raster tiles and Cloud-Optimised GeoTIFFs of the registered imagery
(:mod:`layers.imagery`, drawn by :mod:`tiles.raster`)::

    /tiles/imagery                              the registry (JSON)
    /tiles/imagery/tilejson.json                TileJSON of the orthophoto mosaic
    /tiles/imagery/{z}/{x}/{y}.png|jpg|webp     the mosaic, newest on top
    /tiles/imagery/{name}/tilejson.json         TileJSON of one image
    /tiles/imagery/{name}/{z}/{x}/{y}.png       one image (orthophoto or mask)
    /tiles/imagery/{name}.tif                   its COG, with HTTP Range (GDAL /vsicurl/)
    /tiles/changes/{run_id}/tilejson.json       TileJSON of a change run's mask
    /tiles/changes/{run_id}/{z}/{x}/{y}.png     the mask in colour
    /tiles/changes/{run_id}/mask.tif            the mask's COG, with HTTP Range

XYZ addressing (x column from the west, y row from the north), WebMercatorQuad. Empty
tile: 204. Bad address or format: 400; unknown image or run: 404 (problem+json).
Tiles are drawn on the thread pool (:func:`starlette.concurrency.run_in_threadpool`),
never on the event loop.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from layers import imagery
from layers.errors import NotFound
from tiles.errors import InvalidTile
from tiles.raster import Renderer, lonlat_box, media_type, native_zoom
from tiles.tms import TileId

CACHE_CONTROL = "public, max-age=60"  # as the vector tiles: imagery is added and removed
_INTEGER = re.compile(r"[0-9]{1,10}")
TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
          "description": "the tile"},
    204: {"description": "no imagery in this tile"},
    304: {"description": "the tile has not changed (If-None-Match)"},
    400: {"description": "tile address out of range, not an integer, or a format not served"},
    404: {"description": "unknown image or change run"},
}
COG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/tiff": {}}, "description": "the Cloud-Optimised GeoTIFF"},
    206: {"description": "the byte range asked for (Range)"},
    400: {"description": "a run id that is not an integer"},
    404: {"description": "unknown image or change run"},
    416: {"description": "a range outside the file"},
}
JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a run id that is not an integer (problem+json)"},
    404: {"description": "unknown image or change run, or no orthophoto (problem+json)"},
}
RUN_ID_MAX = 2**31 - 1  # change_runs.id is a PostgreSQL integer

router = APIRouter(tags=["Imagery tiles"])


def _number(name: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise InvalidTile(f"{name}: {text!r} is not an integer", parameter=name)
    return int(text)


def _name(name: str) -> str:
    """``name`` when it could be an image's name; else 404 before any SQL (a NUL byte
    or 10 kB of text never reaches PostgreSQL)."""
    if not imagery.NAME.fullmatch(name):
        raise NotFound(f"no imagery named {name[:80]!r}")
    return name


def _address(z: str, x: str, last: str) -> tuple[TileId, str]:
    y, dot, fmt = last.partition(".")
    if not dot:
        raise InvalidTile(f"tile {last!r}: give the format, {{y}}.png, .jpg or .webp",
                          parameter="format")
    media_type(fmt)
    return TileId(_number("z", z), _number("x", x), _number("y", y)), fmt


def _root(request: Request) -> str:
    public = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


async def _tile(request: Request, images: list[imagery.Image], tile: TileId, fmt: str
                ) -> Response:
    from rasterio.errors import RasterioIOError

    renderer: Renderer = request.app.state.renderer
    try:
        data = await run_in_threadpool(renderer.render, images, tile, fmt) if images else None
    except RasterioIOError as exc:  # a registered file removed behind the registry's back
        missing = [i.name for i in images if not i.path.is_file()]
        if not missing:
            raise
        raise NotFound(f"the file of imagery {missing[0]!r} is missing on the server",
                       name=missing[0]) from exc
    headers = {"Cache-Control": CACHE_CONTROL}
    if data is None:
        return Response(status_code=204, headers=headers)
    etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
    headers["ETag"] = etag
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type(fmt), headers=headers)


def _tilejson(name: str, url: str, images: list[imagery.Image]) -> dict[str, Any]:
    w = min(i.bounds[0] for i in images)
    s = min(i.bounds[1] for i in images)
    e = max(i.bounds[2] for i in images)
    n = max(i.bounds[3] for i in images)
    top = max(native_zoom(i.resolution_m, (s + n) / 2) for i in images)
    return {"tilejson": "3.0.0", "name": name, "scheme": "xyz", "tiles": [url],
            "minzoom": 0, "maxzoom": top, "bounds": [w, s, e, n],
            "center": [(w + e) / 2, (s + n) / 2, max(0, top - 3)],
            "attribution": "gridgov imagery"}


def _cog(image: imagery.Image) -> Response:
    if not image.path.is_file():
        raise NotFound(f"the file of imagery {image.name!r} is missing on the server",
                       name=image.name)
    return FileResponse(image.path, media_type="image/tiff",
                        filename=f"{image.name}.tif", content_disposition_type="inline",
                        headers={"Cache-Control": CACHE_CONTROL})


async def _one(request: Request, name: str) -> imagery.Image:
    name = _name(name)
    async with request.app.state.read_pool.connection() as conn:
        return await imagery.alookup(conn, name)


async def _mask(request: Request, run_id: str) -> imagery.Image:
    rid = _number("run_id", run_id)
    if rid > RUN_ID_MAX:
        raise NotFound(f"no change run {rid}", run_id=rid)
    async with request.app.state.read_pool.connection() as conn:
        return await imagery.arun_mask(conn, rid)


# -- the orthophoto mosaic ----------------------------------------------------------------


@router.get("/tiles/imagery", summary="Registered imagery (orthophotos and change masks)",
            responses=JSON_RESPONSES)
async def list_imagery(request: Request) -> dict[str, Any]:
    async with request.app.state.read_pool.connection() as conn:
        items = await imagery.alist_images(conn)
    root = _root(request)
    return {"imagery": [{**i.as_json(),
                         "tiles": f"{root}/tiles/imagery/{i.name}/{{z}}/{{x}}/{{y}}.png",
                         "tilejson": f"{root}/tiles/imagery/{i.name}/tilejson.json",
                         "cog": f"{root}/tiles/imagery/{i.name}.tif"} for i in items],
            "mosaic": f"{root}/tiles/imagery/tilejson.json"}


@router.get("/tiles/imagery/tilejson.json",
            summary="TileJSON 3.0.0 of the orthophoto mosaic (QGIS XYZ, MapLibre)",
            responses=JSON_RESPONSES)
async def mosaic_tilejson(request: Request) -> dict[str, Any]:
    async with request.app.state.read_pool.connection() as conn:
        images = await imagery.aorthophotos(conn)
    if not images:
        raise NotFound("no orthophoto is registered (gridgov imagery add FILE --name N)")
    return _tilejson("orthophotos", f"{_root(request)}/tiles/imagery/{{z}}/{{x}}/{{y}}.png",
                     images)


@router.get("/tiles/imagery/{z}/{x}/{tile}", summary="A tile of the orthophoto mosaic",
            response_class=Response, responses=TILE_RESPONSES)
async def mosaic_tile(request: Request, z: str, x: str, tile: str) -> Response:
    tid, fmt = _address(z, x, tile)
    async with request.app.state.read_pool.connection() as conn:
        images = await imagery.aorthophotos(conn, lonlat_box(tid))
    return await _tile(request, images, tid, fmt)


# -- one image ------------------------------------------------------------------------------


@router.get("/tiles/imagery/{name}/tilejson.json", summary="TileJSON 3.0.0 of one image",
            responses=JSON_RESPONSES)
async def image_tilejson(request: Request, name: str) -> dict[str, Any]:
    image = await _one(request, name)
    return _tilejson(name, f"{_root(request)}/tiles/imagery/{name}/{{z}}/{{x}}/{{y}}.png",
                     [image])


@router.get("/tiles/imagery/{name}/{z}/{x}/{tile}", summary="A tile of one image",
            response_class=Response, responses=TILE_RESPONSES)
async def image_tile(request: Request, name: str, z: str, x: str, tile: str) -> Response:
    tid, fmt = _address(z, x, tile)
    return await _tile(request, [await _one(request, name)], tid, fmt)


@router.head("/tiles/imagery/{file}", include_in_schema=False)
@router.get("/tiles/imagery/{file}",
            summary="One image's Cloud-Optimised GeoTIFF ({name}.tif; Range requests, HEAD)",
            response_class=Response, responses=COG_RESPONSES)
async def image_cog(request: Request, file: str) -> Response:
    name, dot, ext = file.rpartition(".")
    if not dot or ext != "tif":
        raise NotFound(f"{file!r}: images are served as {{name}}.tif")
    return _cog(await _one(request, name))


# -- change masks ---------------------------------------------------------------------------


@router.get("/tiles/changes/{run_id}/tilejson.json",
            summary="TileJSON 3.0.0 of a change run's mask", responses=JSON_RESPONSES)
async def mask_tilejson(request: Request, run_id: str) -> dict[str, Any]:
    image = await _mask(request, run_id)
    return _tilejson(image.name,
                     f"{_root(request)}/tiles/changes/{image.run_id}/{{z}}/{{x}}/{{y}}.png",
                     [image])


@router.get("/tiles/changes/{run_id}/{z}/{x}/{tile}",
            summary="A tile of a change run's mask (new red, removed blue, other yellow)",
            response_class=Response, responses=TILE_RESPONSES)
async def mask_tile(request: Request, run_id: str, z: str, x: str, tile: str) -> Response:
    tid, fmt = _address(z, x, tile)
    return await _tile(request, [await _mask(request, run_id)], tid, fmt)


@router.head("/tiles/changes/{run_id}/mask.tif", include_in_schema=False)
@router.get("/tiles/changes/{run_id}/mask.tif",
            summary="A change run's mask as a Cloud-Optimised GeoTIFF (Range requests, HEAD)",
            response_class=Response, responses=COG_RESPONSES)
async def mask_cog(request: Request, run_id: str) -> Response:
    return _cog(await _mask(request, run_id))


def install(app: FastAPI) -> None:
    """The routes, and the renderer (closed with ``app.state.renderer.close()``)."""
    app.state.renderer = Renderer()
    app.include_router(router)
