"""``/locate``: which micro-grid, community, street and worker own a point."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg_pool import AsyncConnectionPool

from api import locate_io
from api.auth import optional_principal
from gis.crs import INPUT_CRS, to_storage, to_storage_many
from layers.locate import generation_at, locate, locate_many
from layers.nearby import MAX_LIMIT, MAX_RADIUS_M, NEARBY_LAYERS, nearby

router = APIRouter(tags=["spatial answers"])


@router.get(
    "/locate",
    summary="Which grid owns this point",
    description=(
        "The micro-grid, community and street that own the point, the grid generation "
        "used and the worker on duty (name; the phone too for an officer's bearer token). "
        "`crs` is one of " + ", ".join(INPUT_CRS) + " "
        "(`gcj02`: WeChat / Amap; `bd09`: Baidu); with a projected CRS `lon`/`lat` are "
        "easting/northing. A point on a boundary shared by several micro-grids belongs "
        "to the one with the lowest code. Outside the territory: 404 naming the nearest "
        "micro-grid and the distance to it in metres."
    ),
    responses={400: {"description": "bad coordinates or crs"},
               404: {"description": "outside the territory"}},
)
async def get_locate(
    request: Request,
    lon: Annotated[float, Query(description="longitude (or easting)")],
    lat: Annotated[float, Query(description="latitude (or northing)")],
    crs: Annotated[str, Query(description="CRS of lon/lat")] = "EPSG:4490",
    at: Annotated[dt.date | None, Query(description="date: the grid valid then")] = None,
) -> dict[str, Any]:
    x, y = to_storage(lon, lat, crs)
    officer = await optional_principal(request, "officer")
    # the worker's phone (an officer's answer) is personal data: the writer's pool, which
    # may read it and logs the read; everybody else reads the published views
    pool: AsyncConnectionPool = (request.app.state.pool if officer is not None
                                 else request.app.state.read_pool)
    async with pool.connection() as conn:
        answer = await locate(conn, x, y, at or dt.date.today(), with_phone=officer is not None)
        if officer is not None and answer.get("worker"):  # personal data: every read logged
            await conn.execute(
                "INSERT INTO personal_data_reads (actor, actor_role, what, route) "
                "VALUES (%s, %s, %s, %s)", (officer.name, officer.role,
                                            f"worker phone of {answer['micro_grid']['code']}",
                                            request.url.path))
    return {**answer, "point": {"lon": round(x, 8), "lat": round(y, 8), "crs": "EPSG:4490"},
            "crs": crs}


@router.post(
    "/locate",
    summary="Which grid owns each of many points (streamed, in input order)",
    description=(
        "Up to 100,000 points as a GeoJSON FeatureCollection of Points "
        "(`application/geo+json`) or CSV with `lon` and `lat` columns (`text/csv`; "
        "`charset=gbk` and others are honoured, UTF-8 with or without BOM is the default). "
        "The answer has the input's format and order: each feature or row keeps what it "
        "had and gains `micro_grid_code`, `micro_grid_name`, `community_code`, "
        "`community_name`, `street_code`, `street_name`, `worker`; a point outside the "
        "territory has no micro-grid and gains `nearest_code`, `nearest_name`, `distance_m`. "
        "GeoJSON answers carry the point in EPSG:4490 as geometry. The whole input is "
        "checked before the first answer: a bad point is a 400 naming it."
    ),
    responses={
        200: {"content": {"application/geo+json": {}, "text/csv": {}},
              "description": "answers, streamed"},
        400: {"description": "bad body, coordinates or crs"},
        413: {"description": "more than 100,000 points"},
    },
    response_class=StreamingResponse,
)
async def post_locate(
    request: Request,
    crs: Annotated[str, Query(description="CRS of the input coordinates")] = "EPSG:4490",
    at: Annotated[dt.date | None, Query(description="date: the grid valid then")] = None,
) -> StreamingResponse:
    points = locate_io.parse(await request.body(), request.headers.get("content-type", ""))
    lons, lats = to_storage_many(points.xs, points.ys, crs)
    when = at or dt.date.today()
    pool: AsyncConnectionPool = request.app.state.read_pool
    async with pool.connection() as conn:
        generation = await generation_at(conn, when)

    async def chunks() -> AsyncIterator[list[tuple[Any, ...]]]:
        async with pool.connection() as conn:
            async for rows in locate_many(conn, lons, lats, generation, when):
                yield rows

    headers = {"Gridgov-Generation": str(generation["id"])}
    if points.kind == "csv":
        return StreamingResponse(locate_io.csv_stream(points, chunks()),
                                 media_type="text/csv; charset=utf-8", headers=headers)
    head = {"generation": generation, "input_crs": crs, "numberReturned": len(lons)}
    return StreamingResponse(
        locate_io.geojson_stream(points, lons.tolist(), lats.tolist(), head, chunks()),
        media_type="application/geo+json", headers=headers)


@router.get(
    "/nearby",
    summary="What lies within a radius, nearest first",
    description=(
        "Features of the chosen layers within `radius` metres of the point, nearest first, "
        "as a GeoJSON FeatureCollection (EPSG:4490). `distance_m` is measured on the "
        f"ellipsoid to the nearest part of each feature. `radius` is at most "
        f"{MAX_RADIUS_M:.0f} m, `limit` at most {MAX_LIMIT}; `layers` is a comma-separated "
        f"list from: {', '.join(NEARBY_LAYERS)}."
    ),
    responses={200: {"content": {"application/geo+json": {}}},
               400: {"description": "bad coordinates, radius, limit or layer"}},
)
async def get_nearby(
    request: Request,
    lon: Annotated[float, Query(description="longitude (or easting)")],
    lat: Annotated[float, Query(description="latitude (or northing)")],
    radius: Annotated[float, Query(description="metres")] = 200.0,
    layers: Annotated[str, Query(description="comma-separated layer names")] = (
        "cameras,high_points,buildings"
    ),
    limit: Annotated[int, Query(description="most features returned")] = 100,
    crs: Annotated[str, Query(description="CRS of lon/lat")] = "EPSG:4490",
) -> JSONResponse:
    x, y = to_storage(lon, lat, crs)
    names = [n.strip() for n in layers.split(",") if n.strip()]
    pool: AsyncConnectionPool = request.app.state.read_pool
    async with pool.connection() as conn:
        features = await nearby(conn, x, y, radius, names, limit)
    body = {
        "type": "FeatureCollection",
        "point": {"lon": round(x, 8), "lat": round(y, 8), "crs": "EPSG:4490"},
        "radius_m": radius,
        "layers": names,
        "numberReturned": len(features),
        "features": features,
    }
    return JSONResponse(body, media_type="application/geo+json")
