"""layers.frames: GeoDataFrames of registry layers and queries, read-only, on real PostGIS."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from layers import db, frames
from layers.errors import InvalidInput, NotFound
from layers.registry import LAYERS


def _count(url: str, layer: str) -> int:
    spec = LAYERS[layer]
    where = (" WHERE generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"
             if "generation_id" in spec.columns else "")
    with db.connect(url) as conn:
        from psycopg import sql

        stmt = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.table))
        return int(conn.execute(stmt + sql.SQL(where)).fetchone()[0])


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_as_published(db_url: str, layer: str) -> None:
    gdf = frames.frame(db_url, layer)
    assert isinstance(gdf, gpd.GeoDataFrame)
    assert list(gdf.columns) == [*LAYERS[layer].columns, "geom"]
    assert gdf.index.name == "id"
    assert gdf.crs.to_epsg() == 4490
    assert len(gdf) == _count(db_url, layer)


def test_grid_levels_give_the_current_generation_or_the_one_asked(db_url: str) -> None:
    grids = frames.frame(db_url, "micro_grids", columns=["code", "generation_id"])
    assert grids["generation_id"].nunique() == 1
    gen = int(grids["generation_id"].iloc[0])
    again = frames.frame(db_url, "micro_grids", columns=["code"], generation_id=gen)
    assert sorted(again["code"]) == sorted(grids["code"])
    assert frames.frame(db_url, "micro_grids", generation_id=gen + 999).empty
    with pytest.raises(InvalidInput, match="no generations"):
        frames.frame(db_url, "cameras", generation_id=gen)


def test_columns_where_bbox_limit_and_crs(db_url: str) -> None:
    cams = frames.frame(db_url, "cameras", columns=["code", "kind"], where={"kind": "dome"})
    assert set(cams["kind"]) == {"dome"} and len(cams) > 0
    first = frames.frame(db_url, "cameras", columns=["code"], limit=5)
    assert len(first) == 5 and list(first.index) == sorted(first.index)
    x0, y0, x1, y1 = cams.total_bounds
    box = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    inside = frames.frame(db_url, "cameras", columns=["code"], bbox=box)
    expected = frames.frame(db_url, "cameras", columns=["code"])
    expected = expected[expected.intersects(shapely.box(*box))]
    assert sorted(inside["code"]) == sorted(expected["code"])
    metric = frames.frame(db_url, "high_points", columns=["code"], crs=4548)
    assert metric.crs.to_epsg() == 4548
    assert (metric.geometry.x > 100_000).all()  # metres, not degrees
    back = shapely.get_coordinates(metric.geometry.to_crs(4490).values)
    stored = shapely.get_coordinates(frames.frame(db_url, "high_points", columns=["code"])
                                     .geometry.values)
    assert abs(back - stored).max() < 1e-7


def test_refusals_name_the_fault(db_url: str) -> None:
    with pytest.raises(NotFound, match="no layer 'workers'"):
        frames.frame(db_url, "workers")  # not published: phones are personal data
    with pytest.raises(InvalidInput, match="'phone'"):
        frames.frame(db_url, "micro_grids", columns=["code", "phone"])
    with pytest.raises(InvalidInput, match="'nope'"):
        frames.frame(db_url, "cameras", where={"nope": 1})
    with pytest.raises(InvalidInput, match="bbox"):
        frames.frame(db_url, "cameras", bbox=(118.1, 36, 118.0, 37))
    with pytest.raises(InvalidInput, match="limit"):
        frames.frame(db_url, "cameras", limit=-1)
    with pytest.raises(InvalidInput, match="EPSG:999999"):
        frames.frame(db_url, "cameras", crs=999999)


def test_query_frames_and_types(db_url: str) -> None:
    out = frames.query(db_url, "SELECT code, households, households / 3.0 AS third, geom "
                       "FROM micro_grids WHERE households > %(n)s ORDER BY code", {"n": 300})
    assert isinstance(out, gpd.GeoDataFrame)
    assert out.crs.to_epsg() == 4490 and out.geometry.name == "geom"
    assert out["third"].dtype == float  # numeric comes as float, not Decimal
    assert (out["households"] > 300).all()
    plain = frames.query(db_url, "SELECT count(*) AS n FROM cameras")
    assert type(plain) is pd.DataFrame and int(plain["n"].iloc[0]) == _count(db_url, "cameras")
    two = frames.query(db_url, "SELECT code, geom, ST_Centroid(geom) AS centre FROM "
                       "micro_grids LIMIT 3", geometry="centre")
    assert two.geometry.name == "centre" and two["geom"].iloc[0].geom_type == "MultiPolygon"
    metric = frames.query(db_url, "SELECT ST_Transform(geom, 4548) AS g FROM high_points")
    assert metric.crs.to_epsg() == 4548
    empty = frames.query(db_url, "SELECT code, geom FROM cameras WHERE false")
    assert empty.empty and list(empty.columns) == ["code", "geom"]


def test_query_is_read_only(db_url: str) -> None:
    before = _count(db_url, "cameras")
    with pytest.raises(InvalidInput, match="read-only"):
        frames.query(db_url, "DELETE FROM cameras RETURNING id")
    with pytest.raises(InvalidInput, match="read-only"):
        frames.query(db_url, "CREATE TABLE x (a int)")
    assert _count(db_url, "cameras") == before
    with db.connect(db_url) as conn:  # a connection of the caller's is read-only here too
        with pytest.raises(InvalidInput, match="read-only"):
            frames.query(conn, "UPDATE cameras SET name = 'x' RETURNING id")
        conn.execute("SELECT 1")  # now in a transaction: refused, not mixed in
        with pytest.raises(InvalidInput, match="commit or roll back"):
            frames.query(conn, "SELECT 1 AS one")
        conn.rollback()
        assert int(frames.query(conn, "SELECT 1 AS one")["one"].iloc[0]) == 1
    assert _count(db_url, "cameras") == before


def test_query_faults(db_url: str) -> None:
    with pytest.raises(InvalidInput, match="fails"):
        frames.query(db_url, "SELEC 1")
    with pytest.raises(InvalidInput, match="more than once"):
        frames.query(db_url, "SELECT 1 AS a, 2 AS a")
    with pytest.raises(InvalidInput, match="no column 'geometry'"):
        frames.query(db_url, "SELECT code FROM cameras", geometry="geometry")
    with pytest.raises(InvalidInput, match="not a PostGIS geometry"):
        frames.query(db_url, "SELECT code FROM cameras", geometry="code")
