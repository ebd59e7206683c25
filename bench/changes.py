"""Orthophoto change detection: quality against a plain-differencing baseline, speed
against the bare read of both inputs, and peak memory for ~1 GB and ~4 GB inputs.

1. Scores: the demo pair (seed 1, 2 km x 1.5 km at 0.4 m) and smaller scenes of other
   seeds, with DSMs, colour only, and the plain-differencing baseline, scored object
   by object against the generator's truth (found = covered >= 30 %).
2. Speed and memory: the demo pair repeated into large inputs (``--sizes`` in GB of
   uncompressed RGB of the earlier image; the later one is the demo's later image
   resampled once to the earlier CRS at 0.5 m, so it still goes through a WarpedVRT
   with another resolution). Each measurement runs in its own process, which reports
   its wall time, CPU time and peak resident memory (VmHWM): the floor (a
   block-by-block rasterio read of both files) and the detection (colour only) as
   ``gridgov changes detect --mask-out`` runs it: detect, write the mask COG and the
   GeoJSON.

    .venv/bin/python -m bench.changes                       # ~1 h on 2 cores
    .venv/bin/python -m bench.changes --sizes 0.25,1        # smaller
    .venv/bin/python -m bench.changes --skip-scores --sizes 0.1

Progress goes to stderr; stdout gets markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".data" / "bench-changes"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- scores ----------------------------------------------------------------------------


def scores(work: Path, seeds: list[tuple[int, tuple[float, float]]]) -> list[dict[str, Any]]:
    import shapely
    from pyproj import CRS, Transformer

    from gis.changes_eval import evaluate
    from gis.changes_raster import detect_changes
    from seed_data.orthophoto import write_pair
    from seed_data.town import generate

    _say("generating the demo town")
    town = generate(2023)
    rows = []
    for seed, size in seeds:
        _say(f"pair seed {seed} {size}")
        info = write_pair(town, work / f"pair{seed}", seed=seed, size_m=size)
        truth = json.loads(info.truth.read_text())["features"]
        for name, dsm, method in (("with DSMs", True, "cva"), ("colour only", False, "cva"),
                                  ("plain differencing", False, "difference")):
            extra = (info.before_dsm, info.after_dsm) if dsm else ()
            det = detect_changes(info.before, info.after, *extra, method=method)
            tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(det.crs),
                                      always_xy=True)
            def project(xy: np.ndarray, tr: Transformer = tr) -> np.ndarray:
                return np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))

            t = [shapely.transform(shapely.geometry.shape(f["geometry"]), project)
                 for f in truth if f["properties"]["kind"] == "new_structure"]
            s = evaluate([o.geometry for o in det.objects if o.kind == "new_structure"], t)
            rows.append({"seed": seed, "scene": f"{size[0]:.0f} x {size[1]:.0f} m",
                         "method": name, "truth": s.truth, "detected": s.detected,
                         "recall": round(s.recall, 3), "precision": round(s.precision, 3),
                         "f1": round(s.f1, 3)})
            _say(f"  {name}: {s.row()}")
    return rows


# ---- big inputs ------------------------------------------------------------------------


def make_big(base: Path, out: Path, gb: float) -> tuple[Path, Path, int]:
    """The demo pair repeated to ~``gb`` GB (uncompressed RGB of the earlier image)."""
    import rasterio
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window

    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(base / "before.tif") as b:
        bimg = b.read()
        bt, crs = b.transform, b.crs
    bh, bw = bimg.shape[1:]
    res2 = 0.5
    ah, aw = round(bh * bt.a / res2), round(bw * bt.a / res2)
    from affine import Affine

    at = Affine(res2, 0, bt.c, 0, -res2, bt.f)
    aimg = np.zeros((3, ah, aw), np.uint8)
    with rasterio.open(base / "after.tif") as a:
        for k in range(3):
            reproject(rasterio.band(a, k + 1), aimg[k], dst_transform=at, dst_crs=crs,
                      resampling=Resampling.bilinear, dst_nodata=0)
    copies = gb * 1e9 / (3 * bh * bw)
    ky = max(1, round(math.sqrt(copies * bw / bh)))
    kx = max(1, round(copies / ky))
    paths = []
    for name, img, t in (("before", bimg, bt), ("after", aimg, at)):
        h, w = img.shape[1] * ky, img.shape[2] * kx
        path = out / f"{name}.tif"
        paths.append(path)
        profile = {"driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8",
                   "crs": crs, "transform": t, "tiled": True, "blockxsize": 512,
                   "blockysize": 512, "compress": "deflate", "interleave": "pixel",
                   "BIGTIFF": "YES", "nodata": 0 if name == "after" else None}
        with rasterio.open(path, "w", **profile) as dst:
            for row in range(0, h, 512):
                rr = (np.arange(row, min(row + 512, h)) % img.shape[1])
                strip = img[:, rr, :]
                for col in range(0, w, 512):
                    cc = np.arange(col, min(col + 512, w)) % img.shape[2]
                    dst.write(strip[:, :, cc], window=Window(col, row, len(cc), len(rr)))
        _say(f"  {path.name}: {w} x {h}")
    return paths[0], paths[1], kx * bw * ky * bh


def _child(args: list[str]) -> dict[str, Any]:
    # the floor's GDAL block cache as large as the CLI's (GDAL's default is 5 % of the
    # machine's memory); the detecting child calls bound_memory as the CLI does
    from gis.changes_raster import GDAL_CACHE_MB

    env = dict(os.environ, GDAL_CACHEMAX=str(GDAL_CACHE_MB))
    r = subprocess.run([sys.executable, "-m", "bench.changes", "--child", *args], cwd=ROOT,
                       env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"child {args} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: Linux carries the
    forking parent's peak into ``ru_maxrss`` across exec, VmHWM starts afresh."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(argv: list[str]) -> None:
    """One measurement in this process: ``read B A`` or ``detect B A WORKERS``."""
    what, before, after = argv[0], argv[1], argv[2]
    t0, c0 = time.perf_counter(), time.process_time()
    phases: dict[str, float] = {}
    if what == "read":
        import rasterio
        from rasterio.windows import Window

        for path in (before, after):
            with rasterio.open(path) as src:
                for row in range(0, src.height, 1024):
                    for col in range(0, src.width, 1024):
                        src.read(window=Window(col, row, min(1024, src.width - col),
                                               min(1024, src.height - row)))
                        src.dataset_mask(window=Window(col, row, min(1024, src.width - col),
                                                       min(1024, src.height - row)))
        n = 0
    else:
        import tempfile

        from gis.changes_raster import (
            bound_memory,
            close_datasets,
            plan_detection,
            run_detection,
            write_geojson,
            write_mask,
        )

        # what `gridgov changes detect --mask-out` does (detect_changes, then the
        # GeoJSON), one phase at a time, each with its own peak
        bound_memory()
        with tempfile.TemporaryDirectory(dir=Path(before).parent) as tmp:
            peak_before = _phase_start()
            try:
                plan = plan_detection(before, after)
                det = run_detection(plan, workers=int(argv[3]))
            finally:
                close_datasets()
            phases["detect"] = _peak_mb()
            with det:
                _phase_start()
                write_mask(plan, det.objects, Path(tmp) / "mask.tif")
                phases["mask"] = _peak_mb()
                _phase_start()
                write_geojson(det, Path(tmp) / "changes.geojson")
                phases["geojson"] = _peak_mb()
                n = len(det.objects)
            phases["imports"] = peak_before
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = max([_peak_mb(), *phases.values()])
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_mb, "objects": n,
                      "phases": {k: round(v) for k, v in phases.items()}}))


def _phase_start() -> float:
    """The peak so far; then the peak (VmHWM) starts again from the resident size now
    (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    peak = _peak_mb()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peaks of later phases include the earlier ones
        pass
    return peak


def speed(work: Path, sizes: list[float], workers: int) -> list[dict[str, Any]]:
    from seed_data.orthophoto import write_pair
    from seed_data.town import generate

    base = work / "pair1"
    if not (base / "before.tif").exists():
        write_pair(generate(2023), base, seed=1)
    rows = []
    for gb in sizes:
        _say(f"building a {gb} GB input")
        big = work / f"big-{gb}"
        b, a, pixels = make_big(base, big, gb)
        _say("  floor: reading both")
        floor = _child(["read", str(b), str(a)])
        _say(f"  detecting ({workers} threads)")
        det = _child(["detect", str(b), str(a), str(workers)])
        mpx = pixels / 1e6
        rows.append({
            "input_gb": round(pixels * 3 / 1e9, 2), "megapixels": round(mpx),
            "floor_mpx_s": round(mpx / floor["wall_s"], 1),
            "detect_mpx_s": round(mpx / det["wall_s"], 2),
            "ratio": round(det["wall_s"] / floor["wall_s"], 1),
            "cores_busy": round(det["cpu_s"] / det["wall_s"], 2),
            "floor_peak_mb": round(floor["peak_mb"]), "detect_peak_mb": round(det["peak_mb"]),
            "objects": det["objects"],
            "peak_mb_by_phase": " / ".join(f"{det['phases'][k]}" for k in
                                           ("detect", "mask", "geojson")),
        })
        _say(f"  {rows[-1]}")
        shutil.rmtree(big, ignore_errors=True)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,4", help="input sizes in GB, comma-separated")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--skip-scores", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    if not a.skip_scores:
        result["scores"] = scores(a.work, [(1, (2000.0, 1500.0)), (2, (800.0, 800.0)),
                                           (3, (800.0, 800.0)), (4, (800.0, 800.0))])
        print("## New structures, object level (found = covered >= 30 %)\n")
        print(_table(result["scores"]) + "\n", flush=True)
    if not a.skip_speed:
        result["speed"] = speed(a.work, [float(s) for s in a.sizes.split(",")], a.workers)
        print(f"## Speed and peak memory ({a.workers} threads, {os.cpu_count()} CPUs)\n")
        print(_table(result["speed"]) + "\n", flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
