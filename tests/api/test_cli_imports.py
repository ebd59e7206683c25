"""The ``gridgov`` command line imports the database layer, the settings and the web stack
only inside the commands that use them: a raster command (``changes detect`` without
``--commit``) must not pay ~100 MB of resident size for SQLAlchemy, psycopg, pydantic..."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_PACKAGES = ("sqlalchemy", "alembic", "geoalchemy2", "psycopg", "psycopg_pool",
                  "pydantic", "pydantic_settings", "fastapi", "starlette", "uvicorn")
HEAVY_MODULES = ("api.database", "api.settings", "api.links", "api.app", "layers.db",
                 "layers.models", "layers.grids", "layers.maps")

# Prints the heavy packages and modules loaded, one per line, after running CODE.
PROBE = """\
import sys
{code}
heavy = set({packages!r})
exact = set({modules!r})
loaded = {{name.split(".")[0] for name in sys.modules if name.split(".")[0] in heavy}}
loaded |= {{name for name in sys.modules if name in exact}}
print("\\n".join(sorted(loaded)))
"""


def _loaded_after(code: str) -> list[str]:
    probe = PROBE.format(code=code, packages=HEAVY_PACKAGES, modules=HEAVY_MODULES)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_importing_the_cli_loads_no_database_settings_or_web_modules() -> None:
    loaded = _loaded_after("import api.cli")
    assert not loaded, f"`import api.cli` loaded: {', '.join(loaded)}"


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["changes", "detect", "--help"],
    ["grid", "import", "--help"],
])
def test_help_loads_no_database_settings_or_web_modules(argv: list[str]) -> None:
    code = (
        "import runpy\n"
        f"sys.argv = ['gridgov', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('api', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "else:\n"
        "    raise AssertionError('no exit')\n"
        "sys.stdout.flush()\n"
        "print('@@loaded@@')\n"
    )
    out = _loaded_after(code)
    # typer (0.29) itself coerces a command's parameters through pydantic TypeAdapters, so
    # building a sub-command loads pydantic (~10 MB); pydantic_settings is still ours.
    loaded = [m for m in out[out.index("@@loaded@@") + 1:] if m != "pydantic"]
    assert not loaded, f"`gridgov {' '.join(argv)}` loaded: {', '.join(loaded)}"
