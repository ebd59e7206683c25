"""``gridgov grid``: topology check and import of grid generations."""

from __future__ import annotations

import typer

grid_app = typer.Typer(help="The three-level grid: topology check, import of a new "
                       "generation.", no_args_is_help=True)
