"""One change detection in a process of its own: ``python -m gis.changes_worker JOB.json``.

The server's ``detect-changes`` process runs the detection here, not in a thread of the
server: the work is CPU-bound (numpy, GDAL and Python all at once), so the server's
event loop keeps answering while it runs, and a dismissed job is stopped by ending this
process at once, whatever it is doing.

``JOB.json`` holds ``before``, ``after``, ``before_dsm``, ``after_dsm`` (paths or null),
``workers``, ``block``, ``method``, ``out`` (the GeoJSON to write) and ``mask`` (the COG
change mask to write, or null). One JSON object per line goes to the original standard
output (anything the libraries print goes to standard error):

- ``{"phase": "planning"}``: checking the pair and fitting the global parameters;
- ``{"tiles": [done, total]}`` after each tile;
- ``{"phase": "merging"}``: joining objects across tiles, writing the mask;
- ``{"done": {"objects": n, "counts": {kind: n}}}``, exit status 0;
- ``{"error": message, "type": "RasterInputError" | "NoOverlapError" | "internal",
  "extensions": {...}}``, exit status 3 for a refused input, 1 otherwise.

A worker whose parent (the server) has gone stops at its next line.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

REFUSED_EXIT = 3


PARENT = os.getppid()


def _say(out: IO[str], message: dict[str, Any]) -> None:
    if os.getppid() != PARENT:  # the server is gone: nobody wants the answer
        os._exit(1)
    out.write(json.dumps(message, ensure_ascii=False) + "\n")
    out.flush()


def main(argv: list[str]) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # stray prints go to standard error, not into the protocol
    sys.stdout = sys.stderr
    from rasterio.errors import RasterioError

    from gis.errors import GisError

    try:
        job = json.loads(Path(argv[0]).read_text())
        from gis.changes_raster import (
            BLOCK,
            bound_memory,
            close_datasets,
            plan_detection,
            run_detection,
            write_geojson,
            write_mask,
        )

        bound_memory()  # a bounded block cache, freed blocks back to the system: a flat peak
        _say(proto, {"phase": "planning"})
        try:
            plan = plan_detection(job["before"], job["after"], job.get("before_dsm"),
                                  job.get("after_dsm"), block=int(job.get("block", BLOCK)),
                                  method=job.get("method", "cva"))
            # objects are merged as the tiles come and kept on disk beside the output
            detection = run_detection(plan, workers=job.get("workers"),
                                      progress=lambda d, t: _say(proto, {"tiles": [d, t]}),
                                      spool_dir=Path(job["out"]).parent)
        finally:
            close_datasets()
        _say(proto, {"phase": "merging"})
        with detection:
            if job.get("mask"):
                write_mask(plan, detection.objects, job["mask"])
            write_geojson(detection, job["out"])
            counts, n = detection.counts(), len(detection.objects)
        _say(proto, {"done": {"objects": n, "counts": counts}})
        return 0
    except GisError as exc:
        _say(proto, {"error": str(exc), "type": type(exc).__name__,
                     "extensions": exc.extensions})
        return REFUSED_EXIT
    except RasterioError as exc:  # a file whose headers were fine but not its pixels
        said: list[str] = []  # rasterio wraps GDAL's own words: the file, the fault
        cause: BaseException | None = exc
        while cause is not None:
            line = (str(cause).splitlines() or [""])[0]
            if line and "previous exception" not in line and line not in said:
                said.append(line)
            cause = cause.__cause__
        text = "; ".join(said) or type(exc).__name__
        _say(proto, {"error": f"cannot read the rasters: {text[:400]}",
                     "type": "RasterInputError", "extensions": {}})
        return REFUSED_EXIT
    except Exception as exc:  # noqa: BLE001 - reported to the parent, traceback to stderr
        traceback.print_exc()
        _say(proto, {"error": f"{type(exc).__name__}: {exc}", "type": "internal"})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
