"""``gridgov imagery``: register drone orthophotos (and change masks) to serve as raster
tiles and Cloud-Optimised GeoTIFFs; list and remove them.

Exit codes: 0 done, 2 refused (unreadable, no georeference, unknown CRS, outside China,
a name taken or unknown).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from layers.errors import LayersError

if TYPE_CHECKING:
    from api.settings import Settings

imagery_app = typer.Typer(help="Drone orthophotos and change masks served as raster tiles.",
                          no_args_is_help=True)

ERROR_EXIT = 2


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(ERROR_EXIT)


def _date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


@imagery_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="A georeferenced GeoTIFF (any CRS).")],
    name: Annotated[str, typer.Option("--name", help="Its name in URLs "
                                      "(/tiles/imagery/NAME/...).")],
    captured_on: Annotated[str | None, typer.Option(
        "--captured-on", help="Flight date, YYYY-MM-DD (newest is drawn on top).")] = None,
    mask: Annotated[bool, typer.Option("--mask", help="A change mask (one uint8 band: 0 none, "
                                       "1 new, 2 removed, 3 other), not an orthophoto.")
                    ] = False,
) -> None:
    """Register FILE: check it, write it as a COG into the data directory, record it."""
    from api.cli import settings
    from api.database import ensure_database
    from layers import db, imagery

    when = _date(captured_on)
    s = settings()
    database = ensure_database(s, say=lambda _m: None)
    try:
        with db.connect(database.url) as conn, tqdm(
                total=100, desc=f"writing {name} as a COG", unit="%",
                dynamic_ncols=True) as bar:

            def progress(done: float) -> None:
                bar.update(round(done * 100) - bar.n)

            image = imagery.add(conn, s.imagery_dir, file, name,
                                "change_mask" if mask else "orthophoto", when, progress)
            conn.commit()
    except LayersError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"registered {image.name}: {image.kind}, {image.width} x {image.height} px, "
               f"{image.bands} band(s), {image.resolution_m:.3g} m, {image.crs}; "
               f"tiles at /tiles/imagery/{image.name}/{{z}}/{{x}}/{{y}}.png")


@imagery_app.command("list")
def list_cmd() -> None:
    """The registered imagery, one line each."""
    from api.cli import settings
    from api.database import ensure_database
    from layers import db, imagery

    database = ensure_database(settings(), say=lambda _m: None)
    with db.connect(database.url) as conn:
        images = imagery.list_images(conn)
    for i in images:
        w, s_, e, n = i.bounds
        typer.echo(f"{i.name}\t{i.kind}\t{i.captured_on or '-'}\t{i.resolution_m:.3g} m\t"
                   f"{i.width}x{i.height}\t{w:.5f},{s_:.5f},{e:.5f},{n:.5f}\t"
                   f"{'run ' + str(i.run_id) if i.run_id else ''}")
    if not images:
        typer.echo("no imagery registered (gridgov imagery add FILE --name N)")


@imagery_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The image's name.")]) -> None:
    """Forget an image and delete its COG from the data directory."""
    from api.cli import settings
    from api.database import ensure_database
    from layers import db, imagery

    s = settings()
    database = ensure_database(s, say=lambda _m: None)
    try:
        with db.connect(database.url) as conn:
            image = imagery.remove(conn, name)
            conn.commit()
    except LayersError as exc:
        raise _fail(str(exc)) from exc
    imagery.delete_file(s.imagery_dir, image)
    typer.echo(f"removed {name}")


@imagery_app.command("prune-uploads")
def prune_uploads(
    older_than: Annotated[float, typer.Option(
        "--older-than", min=0.0, help="Days since a file was uploaded.")] = 30.0,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be deleted.")] = False,
) -> None:
    """Delete files uploaded to the imagery inbox (POST /api/v1/imagery/uploads, kept for
    the detect-changes process) more than --older-than days ago, and uploads broken off
    half way. The inbox's other files, the registered imagery and the stored change
    runs are not touched."""
    import time

    from api.cli import settings
    from api.ogc.detect_changes import UPLOADS

    folder = settings().imagery_inbox / UPLOADS
    cutoff = time.time() - older_than * 86400
    gone, kept, freed = 0, 0, 0
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_symlink() or not path.is_file():
            continue  # never ours: uploads are plain files
        st = path.stat()
        if st.st_mtime >= cutoff:
            kept += 1
            continue
        typer.echo(f"{'would delete' if dry_run else 'deleted'} {path.name} "
                   f"({st.st_size / 1e6:,.1f} MB)")
        if not dry_run:
            path.unlink(missing_ok=True)
        gone += 1
        freed += st.st_size
    typer.echo(f"{gone} upload(s) {'to delete' if dry_run else 'deleted'} "
               f"({freed / 1e6:,.1f} MB), {kept} kept")


DEMO_NAME = "demo-after"
DEMO_CAPTURED_ON = dt.date(2026, 6, 15)  # the demo pair's later flight (early summer)


def demo_orthophoto(s: Settings, url: str) -> str | None:
    """On the demo town's database: the later orthophoto of the demo pair
    (:func:`seed_data.orthophoto.write_pair`, seed 1) registered as ``demo-after``, once.
    None when done already or the database holds other data."""
    from api.database import demo_town_of
    from layers import db, imagery

    with db.connect(url) as conn:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM imagery WHERE kind = 'orthophoto')"
                        ).fetchone()[0]:  # type: ignore[index]
            return None
    demo = demo_town_of(url)
    if demo is None:
        return None
    outdir = s.data_dir / "demo-orthophoto"
    after = outdir / "after.tif"
    if not after.exists():
        from api.cli import progress_bar
        from seed_data.orthophoto import write_pair
        from seed_data.town import generate

        with progress_bar("drawing the demo orthophotos") as bar:
            write_pair(generate(seed=demo[0], scale=demo[1], progress=bar), outdir, seed=1,
                       progress=bar)
    with db.connect(url) as conn, tqdm(total=100, desc="demo orthophoto as a COG", unit="%",
                                       dynamic_ncols=True) as bar:
        image = imagery.add(conn, s.imagery_dir, after, DEMO_NAME, "orthophoto",
                            DEMO_CAPTURED_ON, lambda f: bar.update(round(f * 100) - bar.n))
        conn.commit()
    return image.name


@imagery_app.command("demo")
def demo() -> None:
    """Register the demo town's drone orthophoto (drawn first if missing; ~40 s)."""
    from api.cli import settings
    from api.database import ensure_database

    s = settings()
    database = ensure_database(s, say=lambda _m: None)
    try:
        name = demo_orthophoto(s, database.url)
    except LayersError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"registered {name}" if name else
               "not registered: an orthophoto is registered already, or this is not the "
               "demo town")
