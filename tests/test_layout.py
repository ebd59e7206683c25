"""The layout the owner fixed, and imports pointing one way: api -> tiles -> layers -> gis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout() -> None:
    for name in ("gis", "layers", "tiles", "api", "seed_data", "notebooks", "tests", "bench",
                 "docker-compose.yml", "Makefile", "README.md", "CHANGES.md",
                 "pyproject.toml", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 3 kept, 0 broken" in r.stdout


def test_nothing_heavy_happens_at_import() -> None:
    # importing the packages must not read settings, open pools or build the app
    code = (
        "import os; os.environ['GRIDGOV_DATABASE_URL'] = 'not a url';"
        "import gis.crs, layers.db, layers.models, layers.loader, api.app, api.cli;"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_ci_runs_make_test_only() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    commands = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "make test" in commands
