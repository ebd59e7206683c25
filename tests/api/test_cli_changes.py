"""`gridgov changes ...`: detect, demo, score; refusals are exit 2 with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

from api.cli import app
from seed_data.orthophoto import PairInfo, write_pair
from seed_data.town import Town

runner = CliRunner()


@pytest.fixture(scope="module")
def pair(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> PairInfo:
    return write_pair(demo_town, tmp_path_factory.mktemp("clipair"), seed=3,
                      size_m=(600.0, 600.0))


def test_detect_writes_crs84_geojson_and_a_cog_mask(pair: PairInfo, tmp_path: Path) -> None:
    out, mask = tmp_path / "changes.geojson", tmp_path / "mask.tif"
    r = runner.invoke(app, ["changes", "detect", str(pair.before), str(pair.after),
                            "--out", str(out), "--before-dsm", str(pair.before_dsm),
                            "--after-dsm", str(pair.after_dsm), "--mask-out", str(mask),
                            "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "new_structure" in r.output and "tile" in r.output  # summary and progress bar
    doc = json.loads(out.read_text())
    assert doc["crs"]["properties"]["name"].endswith("CRS84")
    kinds = {f["properties"]["kind"] for f in doc["features"]}
    assert "new_structure" in kinds and kinds <= {"new_structure", "removed_structure",
                                                  "other"}
    for f in doc["features"]:
        assert f["properties"]["area_m2"] > 0 and 0 <= f["properties"]["score"] <= 1
        assert f["properties"]["cue"] in ("height", "height+colour", "colour")
    with rasterio.open(mask) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    # the score command agrees the new structures are the truth's
    s = runner.invoke(app, ["changes", "score", str(out), str(pair.truth)])
    assert s.exit_code == 0, s.output
    assert "recall 1.00" in s.output or "recall 0.9" in s.output


def test_colour_only_says_so(pair: PairInfo, tmp_path: Path) -> None:
    out = tmp_path / "c.geojson"
    r = runner.invoke(app, ["changes", "detect", str(pair.before), str(pair.after),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "colour change only" in r.output and "less reliable" in r.output


def test_commit_files_each_illegal_shed_once_in_its_grid(pair: PairInfo, tmp_path: Path,
                                                        fresh_db_url: str) -> None:
    import psycopg

    out = tmp_path / "c.geojson"
    env = {"GRIDGOV_DATABASE_URL": fresh_db_url, "GRIDGOV_PHOTOS_DIR": str(tmp_path / "ph")}
    args = ["changes", "detect", str(pair.before), str(pair.after), "--out", str(out),
            "--before-dsm", str(pair.before_dsm), "--after-dsm", str(pair.after_dsm),
            "--commit"]
    r = runner.invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    assert "event(s) filed" in r.output
    truth = json.loads(pair.truth.read_text())["features"]
    sheds = [f for f in truth if f["properties"].get("detail") == "shed"]
    permitted = [f for f in truth if f["properties"].get("detail") == "permitted_construction"]
    assert sheds
    with psycopg.connect(fresh_db_url) as conn:
        def hits(f: dict) -> list[tuple]:
            return conn.execute(
                "SELECT d.verdict, d.event_id, e.micro_grid_code, m.code, e.category_code, "
                "e.source, (SELECT count(*) FROM event_photos p WHERE p.event_id = e.id) "
                "FROM change_detections d LEFT JOIN events e ON e.id = d.event_id "
                "LEFT JOIN micro_grid_parts mp ON ST_Intersects(mp.geom, "
                "ST_PointOnSurface(d.geom)) LEFT JOIN micro_grids m ON m.id = mp.micro_grid_id "
                "WHERE d.kind = 'new_structure' AND ST_Intersects(d.geom, ST_SetSRID("
                "ST_GeomFromGeoJSON(%s), 4490))", (json.dumps(f["geometry"]),)).fetchall()

        for shed in sheds:
            (v, eid, grid, owner, cat, source, chips), *_ = hits(shed)
            assert v == "illegal_suspected" and eid is not None
            assert grid == owner and (cat, source) == ("06001", "change_detection")
            assert chips == 2  # before and after
        for f in permitted:
            assert all(h[0] == "permitted" and h[1] is None for h in hits(f))
        (n_events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 0 and "stored 0" in again.output
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == n_events
        assert conn.execute("SELECT count(*) FROM change_runs").fetchone()[0] == 2


def test_refusals_are_exit_2_with_the_reason(pair: PairInfo, tmp_path: Path) -> None:
    out = tmp_path / "c.geojson"
    r = runner.invoke(app, ["changes", "detect", str(pair.before), str(pair.before_dsm),
                            "--out", str(out)])
    assert r.exit_code == 2 and "1 band" in r.output
    r = runner.invoke(app, ["changes", "detect", str(pair.before), str(pair.after),
                            "--out", str(out), "--before-dsm", str(pair.before_dsm)])
    assert r.exit_code == 2 and "--after-dsm" in r.output
    assert not out.exists()


def test_demo_writes_the_pair(tmp_path: Path) -> None:
    r = runner.invoke(app, ["changes", "demo", str(tmp_path), "--seed", "7",
                            "--width-m", "300", "--height-m", "300"])
    assert r.exit_code == 0, r.output
    for name in ("before.tif", "after.tif", "before_dsm.tif", "after_dsm.tif",
                 "truth.geojson"):
        assert (tmp_path / name).exists()
    assert "shed" in r.output
