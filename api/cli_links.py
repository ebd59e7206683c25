"""``gridgov links``: signed short links for phones (``/m/{kind}/{id}?t=…``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from api.cli import fail, settings
from layers.errors import LayersError

links_app = typer.Typer(help="Signed links to the phone map pages.", no_args_is_help=True)


async def _exists(url: str, kind: str, ident: str) -> None:
    from layers import db, maps

    async with await db.aconnect(url) as conn:
        if kind == "e":
            await maps.event_grid_id(conn, int(ident))
        elif kind == "g":
            await maps.micro_grid(conn, ident)
        elif kind == "h":
            await maps.high_point(conn, ident)
        elif kind == "c":
            await maps.change(conn, int(ident))


@links_app.command("make")
def links_make(
    kind: Annotated[str, typer.Argument(help="e (event), g (micro-grid), h (high point), "
                                            "c (detected change), "
                                            "s (the screen: ident 'screen').")],
    ident: Annotated[str, typer.Argument(help="Event or change id, micro-grid or high-point "
                                            "code.")],
    hours: Annotated[float, typer.Option(min=0.01, max=24 * 365,
                                         help="Valid for this many hours.")] = 48.0,
    account: Annotated[int | None, typer.Option(
        help="Bind the link to one account id (users.id).")] = None,
    check: Annotated[bool, typer.Option(help="Check that what it opens exists.")] = True,
) -> None:
    """Print a signed link (GRIDGOV_PUBLIC_URL, else http://127.0.0.1:8000)."""
    from api import links
    from api.database import ensure_database
    from api.settings import secret_key

    s = settings()
    try:
        links.kind_of(kind).check(ident)
    except links.LinkError as exc:
        raise fail(str(exc), 2) from exc
    if check and kind != "s":
        database = ensure_database(s, say=lambda _m: None)
        try:
            asyncio.run(_exists(database.url, kind, ident))
        except LayersError as exc:
            raise fail(str(exc)) from exc
    base = s.public_url or "http://127.0.0.1:8000"
    typer.echo(links.url(base, secret_key(s), kind, ident, hours, account))
