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


def test_commit_is_refused_until_the_event_workflow(pair: PairInfo, tmp_path: Path) -> None:
    out = tmp_path / "c.geojson"
    r = runner.invoke(app, ["changes", "detect", str(pair.before), str(pair.after),
                            "--out", str(out), "--commit"])
    assert r.exit_code == 2
    assert "event workflow" in r.output and "nothing was written" in r.output
    assert not out.exists()


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
