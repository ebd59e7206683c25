"""``/locate``: which micro-grid, community, street and worker own a point."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg_pool import AsyncConnectionPool

from gis.crs import INPUT_CRS, to_storage
from layers.locate import locate

router = APIRouter(tags=["spatial answers"])


@router.get(
    "/locate",
    summary="Which grid owns this point",
    description=(
        "The micro-grid, community and street that own the point, the grid generation "
        "used and the worker on duty. `crs` is one of " + ", ".join(INPUT_CRS) + " "
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
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        answer = await locate(conn, x, y, at or dt.date.today())
    return {**answer, "point": {"lon": round(x, 8), "lat": round(y, 8), "crs": "EPSG:4490"},
            "crs": crs}
