"""``gridgov changes``: drone orthophoto change detection, and its demo pair.

Exit codes: 0 done, 2 anything that stopped the command (unusable or non-overlapping
inputs, a database that refuses the results).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from gis.errors import GisError

changes_app = typer.Typer(help="Drone orthophotos: what was built or removed between two "
                          "flights.", no_args_is_help=True)

ERROR_EXIT = 2


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(ERROR_EXIT)


@changes_app.command("detect")
def detect(
    before: Annotated[Path, typer.Argument(help="The earlier orthophoto (GeoTIFF).")],
    after: Annotated[Path, typer.Argument(help="The later orthophoto (any CRS/resolution).")],
    out: Annotated[Path, typer.Option("--out", help="GeoJSON to write (CRS84).")],
    before_dsm: Annotated[Path | None, typer.Option("--before-dsm",
                                                    help="DSM of the earlier flight.")] = None,
    after_dsm: Annotated[Path | None, typer.Option("--after-dsm",
                                                   help="DSM of the later flight.")] = None,
    mask_out: Annotated[Path | None, typer.Option(
        "--mask-out", help="Also write the change mask as a Cloud-Optimised GeoTIFF.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Threads (default: every core).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Dask scheduler address (tcp://host:8786): run the tiles there; "
        "its workers must read the inputs at the same paths.")] = None,
    block: Annotated[int, typer.Option("--block", min=64, help="Tile size, pixels.")] = 256,
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="Plain differencing instead (for comparison).")] = False,
    coregister: Annotated[bool, typer.Option(
        "--coregister", help="Estimate a sub-pixel shift by phase correlation first "
        "(experimental).")] = False,
    commit: Annotated[bool, typer.Option(
        "--commit", help="Also store the results, intersect them with parcels and file "
        "the suspected illegal ones as events (once, however often the pair is run).")
    ] = False,
) -> None:
    """Find new and removed structures between two orthophotos; write them as GeoJSON."""
    if (before_dsm is None) != (after_dsm is None):
        raise _fail("give both --before-dsm and --after-dsm, or neither")
    from gis.changes_raster import ACCURACY_NOTE, bound_memory, detect_changes, write_geojson

    bound_memory()  # a bounded block cache, freed blocks back to the system: a flat peak

    with tqdm(desc="comparing", unit="tile", dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        try:
            detection = detect_changes(
                before, after, before_dsm, after_dsm, workers=workers, scheduler=scheduler,
                block=block, method="difference" if baseline else "cva",
                coregister=coregister, mask_out=mask_out, progress=progress,
            )
        except GisError as exc:
            raise _fail(str(exc)) from exc
        except (OSError, TimeoutError) as exc:
            if scheduler is None:
                raise
            raise _fail(f"Dask scheduler {scheduler}: {exc}") from exc
    with detection:  # the objects are on disk: written out feature by feature
        write_geojson(detection, out)
        counts = detection.counts()
        note = ACCURACY_NOTE[detection.plan.has_dsm]
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no change"
    typer.echo(f"{summary} -> {out}" + (f" (mask {mask_out})" if mask_out else ""))
    typer.echo(f"note: {note}")
    if commit:
        from api.changes_store import commit as store
        from api.cli import settings
        from api.database import ensure_database
        from layers.errors import LayersError

        s = settings()
        try:
            database = ensure_database(s, say=lambda _m: None)
            doc = json.loads(out.read_text(encoding="utf-8"))
            result = store(s, database.url, before, after, doc, mask_out)
        except (LayersError, GisError) as exc:
            raise _fail(f"nothing stored: {exc}") from exc
        v = ", ".join(f"{k} {n}" for k, n in sorted(result["verdicts"].items()))
        typer.echo(f"stored {result['stored']} (already stored {result['already_stored']}): "
                   f"{v}; {len(result['events'])} event(s) filed: "
                   f"{', '.join(map(str, result['events'])) or 'none'}")


@changes_app.command("demo")
def demo(
    outdir: Annotated[Path, typer.Argument(help="Directory for the pair, DSMs and truth.")],
    seed: Annotated[int, typer.Option("--seed", help="Which scene, and its changes.")] = 1,
    width_m: Annotated[float, typer.Option("--width-m", min=100)] = 2000.0,
    height_m: Annotated[float, typer.Option("--height-m", min=100)] = 1500.0,
    resolution: Annotated[float, typer.Option("--resolution", min=0.05)] = 0.4,
    uint16: Annotated[bool, typer.Option("--uint16", help="12-bit later image.")] = False,
    alpha: Annotated[bool, typer.Option("--alpha", help="Alpha band, not nodata.")] = False,
    striped: Annotated[bool, typer.Option("--striped", help="Strips, not tiles.")] = False,
) -> None:
    """Write a two-epoch orthophoto pair of the demo town with its DSMs and truth."""
    from api.cli import progress_bar, settings
    from seed_data.orthophoto import write_pair
    from seed_data.town import generate

    with progress_bar("demo town") as bar:
        town = generate(settings().seed, progress=bar)
    with progress_bar("orthophoto pair") as bar:
        info = write_pair(town, outdir, seed=seed, size_m=(width_m, height_m),
                          resolution=resolution, dtype="uint16" if uint16 else "uint8",
                          alpha=alpha, striped=striped, progress=bar)
    typer.echo(f"wrote {info.before.name}, {info.after.name}, {info.before_dsm.name}, "
               f"{info.after_dsm.name}, {info.truth.name} to {outdir}")
    typer.echo("truth: " + ", ".join(f"{k} {v}" for k, v in sorted(info.counts.items())))


@changes_app.command("score")
def score(
    detected: Annotated[Path, typer.Argument(help="GeoJSON from `changes detect`.")],
    truth: Annotated[Path, typer.Argument(help="truth.geojson of a demo pair.")],
    kind: Annotated[str, typer.Option("--kind")] = "new_structure",
) -> None:
    """Object-level recall and precision of a detection against truth polygons."""
    import shapely

    from gis.changes_eval import evaluate
    from gis.crs import gk3_epsg, reproject

    def load(path: Path) -> list[shapely.Geometry]:
        try:
            doc = json.loads(path.read_text())
            return [shapely.geometry.shape(f["geometry"]) for f in doc["features"]
                    if f["properties"].get("kind") == kind]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _fail(f"{path}: not a GeoJSON FeatureCollection with kind ({exc})") from exc

    d, t = load(detected), load(truth)
    everything = d + t
    if not everything:
        raise _fail(f"neither file has a {kind}")
    epsg = gk3_epsg(shapely.union_all(everything).centroid.x)
    s = evaluate([reproject(g, 4326, epsg) for g in d], [reproject(g, 4326, epsg) for g in t],
                 kind)
    typer.echo(s.row())
