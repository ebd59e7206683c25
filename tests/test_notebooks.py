"""The planners' notebooks: stored without outputs, and executed top to bottom by nbclient
against the demo town with its event history and a real server for the OGC API cells.

Each notebook reads ``GRIDGOV_DATABASE_URL`` (and ``GRIDGOV_OGC_URL``) from the
environment, as under ``make notebook``; a failing cell fails the test, and each must end
with a result a planner acts on (a non-empty table) and draw at least one map or chart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from api.app import create_app
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_coverage.ipynb", "02_events.ipynb", "03_workload.ipynb", "04_changes.ipynb"]
KERNEL = "gridgov-test"


def test_notebooks_are_stored_without_outputs() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == EXPECTED
    for name in found:
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(book)
        assert book.cells[0].cell_type == "markdown"
        for i, cell in enumerate(book.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name} cell {i} is stored with outputs"
                assert cell.execution_count is None, f"{name} cell {i} has a count"
            assert "cdn" not in cell.source.lower() and "explore(" not in cell.source


@pytest.fixture(scope="module")
def ogc(events_db_url: str, tmp_path_factory: pytest.TempPathFactory,
        served: Callable[[Any], AbstractContextManager[str]]) -> Iterator[str]:
    app = create_app(Settings(env="test", data_dir=tmp_path_factory.mktemp("nbserver")),
                     events_db_url)
    with served(app) as base:
        yield f"{base}/ogc"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec for this interpreter (the project's venv), whatever else is installed."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gridgov (tests)", "language": "python"}))
    return root


def _text(output: nbformat.NotebookNode) -> str:
    data = output.get("data", {})
    return str(data.get("text/html", "")) + str(data.get("text/plain", ""))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_and_ends_with_a_result(
    name: str, events_db_url: str, ogc: str, kernel_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    # the changes notebook stores a comparison: it gets a private copy of the town
    url = request.getfixturevalue("fresh_db_url") if name == "04_changes.ipynb" \
        else events_db_url
    monkeypatch.setenv("GRIDGOV_DATABASE_URL", url)
    monkeypatch.setenv("GRIDGOV_OGC_URL", ogc)
    monkeypatch.setenv("GRIDGOV_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.delenv("GRIDGOV_SURFACE_MODEL", raising=False)  # range rings: the same
    # answer on every machine (the viewshed path has its own test in tests/layers)
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(book, timeout=600, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError:
        nbformat.write(book, tmp_path / name)  # the executed notebook, for the record
        raise
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} draws no map or chart"
    last = [o for o in code[-1].outputs if o.output_type == "execute_result"]
    assert last, f"{name} ends without a result"
    text = _text(last[0])
    assert "Empty DataFrame" not in text and "<tr" in text, f"{name} ends with an empty table"
    rows = text.count("<tr") - 1  # minus the header row
    assert rows >= 1
    # nothing written next to the notebooks
    assert sorted(p.name for p in NOTEBOOKS.iterdir() if p.suffix != ".md"
                  and not p.name.startswith(".")) == EXPECTED
