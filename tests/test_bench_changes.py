"""bench/changes.py end to end on a tiny input: the floor, the detection as the CLI runs
it, and each phase's own peak memory (the numbers themselves are the README's, from
the full run; here only that they are measured and consistent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import changes as bench_changes


@pytest.mark.slow
def test_the_speed_and_memory_bench_runs_and_measures_each_phase(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    out = tmp_path / "result.json"
    bench_changes.main(["--skip-scores", "--sizes", "0.02", "--workers", "2",
                        "--work", str(tmp_path / "work"), "--json", str(out)])
    (row,) = json.loads(out.read_text())["speed"]
    assert row["megapixels"] > 5 and row["objects"] > 0
    assert row["detect_mpx_s"] > 0 and row["ratio"] > 1  # detecting is slower than reading
    phases = [int(p) for p in row["peak_mb_by_phase"].split(" / ")]
    assert len(phases) == 3 and all(0 < p <= row["detect_peak_mb"] for p in phases)
    assert max(phases) == row["detect_peak_mb"] or row["detect_peak_mb"] - max(phases) < 50
    assert 0 < row["floor_peak_mb"] < row["detect_peak_mb"]
    assert "| peak_mb_by_phase |" in capsys.readouterr().out
    assert not list((tmp_path / "work").glob("big-*"))  # the big inputs are removed
