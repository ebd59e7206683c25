"""Planners' queries on the demo town with its event history: coverage gaps and candidate
sites (layers.siting), event hot spots and lateness (layers.eventstats), workload and a
re-gridding proposal checked and imported as a dry run (layers.workload)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import shapely

from gis.crs import reproject
from layers import db, eventstats, frames, siting, workload
from layers.errors import InvalidInput


def _one(url: str, stmt: str, *params: object) -> object:
    with db.connect(url) as conn:
        return conn.execute(stmt, params).fetchone()[0]


@pytest.fixture(scope="module")
def homes(events_db_url: str):  # noqa: ANN201 - GeoDataFrame
    return siting.homes(events_db_url)


def test_households_placed_on_homes_add_up(events_db_url: str, homes) -> None:  # noqa: ANN001
    per_grid = homes.groupby("micro_grid_code")["households"].sum()
    grids = frames.frame(events_db_url, "micro_grids", columns=["code", "households"])
    expected = grids.set_index("code")["households"].loc[per_grid.index]
    assert np.allclose(per_grid.to_numpy(), expected.to_numpy())
    assert set(homes["use"]) <= set(siting.RESIDENTIAL)
    assert homes["building_id"].is_unique


def test_seen_is_outside_the_stored_blind_spots(events_db_url: str, homes) -> None:  # noqa: ANN001
    cov = frames.frame(events_db_url, "micro_grid_coverage", columns=["code"])
    blind = dict(zip(cov["code"], cov.geometry, strict=True))
    sample = homes.sample(400, random_state=1)
    for code, point, seen in zip(sample["micro_grid_code"], sample.geometry, sample["seen"],
                                 strict=True):
        spot = blind.get(code)
        assert seen == (spot is None or not spot.intersects(point))
    assert 0 < (~homes["seen"]).sum() < len(homes)


def test_gaps_rank_grids_by_unseen_households(events_db_url: str, homes) -> None:  # noqa: ANN001
    gaps = siting.gaps(events_db_url)
    unseen = homes[~homes["seen"]].groupby("micro_grid_code")["households"].sum()
    got = gaps.set_index("code")["unseen_households"]
    assert np.allclose(got.loc[unseen.index].to_numpy(), unseen.to_numpy())
    assert list(got) == sorted(got, reverse=True)
    assert len(gaps) == _one(events_db_url, "SELECT count(*) FROM micro_grid_coverage")


@pytest.mark.parametrize("kind", ["high_point", "camera"])
def test_candidate_sites_ranked_by_households_added(events_db_url: str, homes, kind: str
                                                    ) -> None:  # noqa: ANN001
    sites = siting.candidate_sites(events_db_url, kind, k=4, demand=homes)
    assert 1 <= len(sites) <= 4 and list(sites["rank"]) == list(range(1, len(sites) + 1))
    added = sites["households_added"].to_numpy()
    assert (np.diff(added) <= 1e-6).all() and (added > 0).all()
    assert np.allclose(np.cumsum(added), sites["households_cumulative"], atol=0.5)
    # the first site really reaches that many unseen households (checked in metres here)
    unseen = homes[~homes["seen"]]
    epsg = 4548
    centre = reproject(sites.geometry.iloc[0], 4490, epsg)
    pts = unseen.geometry.to_crs(epsg=epsg).values
    near = shapely.dwithin(pts, centre, float(sites["reach_m"].iloc[0]))
    assert unseen["households"].to_numpy()[near].sum() == pytest.approx(added[0], abs=0.1)
    total = unseen["households"].sum()
    assert sites["share_of_unseen"].iloc[-1] == pytest.approx(
        sites["households_cumulative"].iloc[-1] / total, abs=1e-3)
    if kind == "high_point":
        assert (sites["reach_m"] == 3000).all()
    rings = siting.reach_rings(sites)
    assert rings.geometry.iloc[0].contains(sites.geometry.iloc[0])


def test_candidate_sites_refusals(events_db_url: str) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        siting.candidate_sites(events_db_url, "drone")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="k is"):
        siting.candidate_sites(events_db_url, k=0)
    with pytest.raises(InvalidInput, match="reach_m"):
        siting.candidate_sites(events_db_url, reach_m=-5)


def test_monthly_counts_every_problem_once(events_db_url: str) -> None:
    table = eventstats.monthly(events_db_url, "category")
    problems = _one(events_db_url, "SELECT count(*) FROM events WHERE state <> 'merged'")
    assert int(table.to_numpy().sum()) == problems
    assert list(table.index) == sorted(table.index) and table.index[0].startswith("2026-")
    by_grid = eventstats.monthly(events_db_url, "micro_grid")
    assert int(by_grid.to_numpy().sum()) == problems
    with pytest.raises(InvalidInput, match="by is one of"):
        eventstats.monthly(events_db_url, "weather")
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    march_on = eventstats.monthly(events_db_url, "street", start=start)
    assert march_on.index[0] >= "2026-02" and int(march_on.to_numpy().sum()) == _one(
        events_db_url, "SELECT count(*) FROM events WHERE state <> 'merged' AND "
        "reported_at >= %s", start)
    with pytest.raises(InvalidInput, match="timezone"):
        eventstats.monthly(events_db_url, start=dt.datetime(2026, 3, 1))


def test_hot_spots_and_lateness(events_db_url: str) -> None:
    hot = eventstats.hot_spots(events_db_url)
    assert list(hot["events"]) == sorted(hot["events"], reverse=True)
    in_current = _one(events_db_url, "SELECT count(*) FROM events e JOIN micro_grids m ON "
                      "m.code = e.micro_grid_code AND m.generation_id = (SELECT id FROM "
                      "grid_generations WHERE valid_to IS NULL) WHERE e.state <> 'merged'")
    assert hot["events"].sum() == in_current
    top = hot.iloc[0]
    assert top["per_100_households"] == pytest.approx(
        100 * top["events"] / top["households"], abs=0.01)
    assert (hot["trend"] == hot["last_3_months"] - hot["previous_3_months"]).all()
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    late = eventstats.late(events_db_url, now=now)
    closed_late = _one(events_db_url, "SELECT count(*) FROM events WHERE state = 'closed' "
                       "AND closed_at > deadline")
    assert late["closed_late"].sum() == closed_late
    overdue = eventstats.overdue_events(events_db_url, now=now)
    assert late["overdue_now"].sum() == len(overdue) > 0
    assert (overdue["hours_late"] >= 0).all()
    shares = late["late_share"].dropna()
    assert ((shares >= 0) & (shares <= 1)).all()
    with pytest.raises(InvalidInput, match="within"):
        eventstats.hot_spots(events_db_url, within="37%")


def test_workload_proposal_checked_and_imported_as_a_dry_run(events_db_url: str,
                                                             tmp_path: Path) -> None:
    first, last = eventstats.period(events_db_url)
    end = last + dt.timedelta(days=1)
    streets = frames.frame(events_db_url, "streets", columns=["code", "name"])
    fujia = streets[streets["name"].str.contains("傅家")]["code"].iloc[0]
    grids = workload.per_grid(events_db_url, first, end, within=fujia)
    assert grids["code"].str.startswith(fujia).all()
    assert grids["households"].sum() == _one(
        events_db_url, "SELECT sum(households) FROM micro_grids WHERE code LIKE %s AND "
        "generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)",
        fujia + "%")
    assert grids["load"].median() == pytest.approx(1.0, abs=0.05)
    workers = workload.per_worker(grids)
    assert workers["events"].sum() == grids["events"].sum()
    assert "phone" not in workers.columns and "phone" not in grids.columns

    proposal, epsg = workload.propose(events_db_url, grids, high=2.5, low=0.5,
                                      start=first, end=end)
    assert proposal.count("split") > 0 and proposal.count("merge") > 0
    assert sum(u.households for u in proposal.units) == grids["households"].sum()
    table = workload.changes_frame(proposal)
    assert len(table) == len(proposal.changes)
    report = workload.check(events_db_url, proposal, epsg)
    assert report.ok, report.summary()
    shown = workload.proposal_frame(proposal, epsg)
    assert shown.crs.to_epsg() == 4490 and set(shown["change"]) >= {"split", "merge", ""}

    gens = _one(events_db_url, "SELECT count(*) FROM grid_generations")
    result = workload.dry_run_import(events_db_url, proposal, epsg, tmp_path / "new.geojson",
                                     dt.date(2027, 1, 1), "re-gridding proposal")
    assert not result.committed and result.report.ok
    from gis.topology import Level

    mg = result.changes_of(Level.MICRO_GRID)
    new_codes = {c for ch in proposal.changes if ch.action == "split" for c in ch.after[1:]}
    gone = {c for ch in proposal.changes if ch.action == "merge" for c in ch.before[1:]}
    assert set(mg.added) == new_codes and set(mg.removed) == gone
    assert result.changes_of(Level.COMMUNITY).none  # communities keep their outline
    assert _one(events_db_url, "SELECT count(*) FROM grid_generations") == gens


@pytest.mark.slow
def test_high_point_sites_over_the_surface_model(events_db_url: str, homes,  # noqa: ANN001
                                                 demo_dsm) -> None:  # noqa: ANN001
    ring = siting.candidate_sites(events_db_url, "high_point", k=3, demand=homes)
    seen = siting.candidate_sites(events_db_url, "high_point", k=3, demand=homes,
                                  dsm=demo_dsm.path, pool=6)
    assert set(ring["reached_by"]) == {"range ring"}
    assert set(seen["reached_by"]) == {f"viewshed over {Path(demo_dsm.path).name}"}
    assert len(seen) >= 1 and (seen["households_added"] > 0).all()
    # buildings and terrain hide homes: a viewshed never sees more than its ring holds
    best_ring = ring["households_added"].iloc[0]
    assert seen["households_added"].iloc[0] <= best_ring + 1e-6
    with pytest.raises(InvalidInput, match="pool"):
        siting.candidate_sites(events_db_url, k=5, demand=homes, dsm=demo_dsm.path, pool=2)
