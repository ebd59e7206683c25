"""``gridgov grid``: topology check and import of grid generations.

Exit codes: 0 clean (or imported), 1 topology problems (or an import refused for them),
2 anything else that stopped the command (no such generation, unreadable file...).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gis.errors import GisError
from layers.errors import ImportRefused, LayersError

if TYPE_CHECKING:
    from gis.topology import Level, Problem, TopologyReport

grid_app = typer.Typer(help="The three-level grid: topology check, import of a new "
                       "generation.", no_args_is_help=True)

ERROR_EXIT = 2
PLURAL = {"street": "streets", "community": "communities", "micro_grid": "micro-grids"}


def _counts(counts: tuple[tuple[Level, int], ...]) -> str:
    return ", ".join(f"{n} {PLURAL[level.value]}" for level, n in counts)


def _database_url() -> str:
    from api.cli import settings
    from api.database import ensure_database

    return ensure_database(settings(), say=lambda m: typer.echo(m, err=True)).url


def _lonlat(problem: Problem, epsg: int | None) -> tuple[float, float] | None:
    from gis.crs import STORAGE_EPSG, reproject

    if problem.location.is_empty or epsg is None:
        return None
    p = reproject(problem.location, epsg, STORAGE_EPSG)
    return round(p.x, 7), round(p.y, 7)


def _problem_json(problem: Problem, epsg: int | None) -> dict[str, Any]:
    where = _lonlat(problem, epsg)
    return {
        "kind": problem.kind.value,
        "level": problem.level.value,
        "codes": list(problem.codes),
        "lon": where[0] if where else None,
        "lat": where[1] if where else None,
        "area_m2": round(problem.area_m2, 2),
        "detail": problem.detail,
    }


def _print_report(report: TopologyReport, err: bool = False) -> None:
    for p in report.problems:
        where = _lonlat(p, report.epsg)
        at = f"{where[0]:.7f},{where[1]:.7f}" if where else "-"
        typer.echo(
            f"{p.kind.value:<15} {p.level.value:<11} {','.join(p.codes)}  at {at} (lon,lat)  "
            f"{p.area_m2:,.1f} m²  {p.detail}",
            err=err,
        )
    typer.echo("clean: no topology problems" if report.ok else report.summary(), err=err)


@grid_app.command("check")
def check(
    generation: Annotated[int | None, typer.Option(
        "--generation", "-g", help="Generation id (default: the current one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the topology of a grid generation; exit 1 when it has problems."""
    from api.cli import fail
    from layers import db
    from layers.grids import check_generation, get_generation

    try:
        with db.connect(_database_url()) as conn:
            gen = get_generation(conn, generation)
            report = check_generation(conn, gen.id)
    except (LayersError, GisError) as exc:
        raise fail(str(exc), ERROR_EXIT) from exc
    if as_json:
        typer.echo(json.dumps({
            "generation": gen.id,
            "ok": report.ok,
            "checked": {level.value: n for level, n in report.checked},
            "problems": [_problem_json(p, report.epsg) for p in report.problems],
        }, ensure_ascii=False, indent=2))
    else:
        typer.echo(f"{gen.label()}: checked {_counts(report.checked)}")
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@grid_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="GeoPackage, GeoJSON, Shapefile... any CRS.")],
    layer: Annotated[str | None, typer.Option(help="Layer of a multi-layer file.")] = None,
    valid_from: Annotated[dt.datetime | None, typer.Option(
        "--valid-from", formats=["%Y-%m-%d"], help="First day of the new generation "
        "[default: today].")] = None,
    name: Annotated[str | None, typer.Option(
        help="Name of the new generation [default: the file's name].")] = None,
    commit: Annotated[bool, typer.Option("--commit", help="Write it; without this, a dry "
                                         "run that writes nothing.")] = False,
) -> None:
    """Import a new grid generation from a file (a dry run unless --commit)."""
    from api.cli import fail
    from gis.topology import TopologyReport
    from layers import db
    from layers.grids import import_generation

    start = valid_from.date() if valid_from else dt.date.today()
    try:
        with db.connect(_database_url()) as conn:
            result = import_generation(conn, file, start, name or file.stem, commit=commit,
                                       layer=layer)
    except ImportRefused as exc:
        typer.secho(f"import refused: {exc}", fg=typer.colors.RED, err=True)
        if isinstance(exc.report, TopologyReport):
            _print_report(exc.report)
        raise typer.Exit(1) from exc
    except (LayersError, GisError) as exc:
        raise fail(str(exc), ERROR_EXIT) from exc

    built = (" (" + ", ".join(PLURAL[lv.value] for lv in result.built)
             + " built from their children)" if result.built else "")
    typer.echo(f"read {result.source}: {_counts(result.counts)}{built}")
    typer.echo(f"topology: {result.report.summary()}")
    against = result.previous.label() if result.previous else "an empty database"
    typer.echo(f"changes against {against}:")
    for level, ch in result.changes:
        typer.echo(f"  {level.value}: {len(ch.added)} added, {len(ch.removed)} removed, "
                   f"{len(ch.changed)} changed, {len(ch.renamed)} renamed")
        if ch.added:
            typer.echo(f"    added    {', '.join(ch.added)}")
        if ch.removed:
            typer.echo(f"    removed  {', '.join(ch.removed)}")
        for code, m2 in ch.changed:
            typer.echo(f"    changed  {code} ({m2:,.1f} m² moved)")
        for code, old, new in ch.renamed:
            typer.echo(f"    renamed  {code}: {old} -> {new}")
    if result.generation is None:
        typer.echo("dry run: nothing written (add --commit to write it)")
        return
    if result.previous is not None:
        typer.echo(f"closed generation {result.previous.id} on {result.generation.valid_from}")
    typer.echo(f"wrote {result.generation.label()}")
