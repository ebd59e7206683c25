"""The ``detect-changes`` OGC process (issues #3 and #5): ``gridgov changes detect
--commit`` as an asynchronous job.

Inputs come from one directory only, the imagery inbox (``GRIDGOV_IMAGERY_INBOX``,
default ``<data_dir>/inbox``):

- a path relative to the inbox (``"flights/2026-05/before.tif"``), an absolute path in
  it, or a ``file:`` URL to it, given as a string or as ``{"href": ...}``; ``..``, a path
  (or a symlink) leading out of the inbox and any other URL scheme are a 400 naming the
  input;
- an upload: ``POST /api/v1/imagery/uploads`` streams a GeoTIFF into ``uploads/`` of the
  inbox (officers; up to ``GRIDGOV_IMAGERY_UPLOAD_MAX_BYTES``) and answers the ``href`` to
  give here; small files may also come inline as an OGC qualified value
  ``{"value": <base64>, "mediaType": "image/tiff"}`` (within the request body limit).
  Uploads are stored under the SHA-256 of their bytes, so the same file sent twice is
  one file (and one pair key: no duplicate events).

Everything that can be known from the files' headers is checked before any job exists
(:func:`gis.changes_raster.check_inputs`: readable raster, bands, CRS, overlap): a bad
input is a 400, never a failed job.

The detection runs in a child process (``python -m gis.changes_worker``), never in the
server: it is CPU-bound, so the server's event loop and its other requests are not
slowed by the job, and a dismissed job (``DELETE /ogc/jobs/{id}``) ends the child at
once. Its progress lines become the job's percent and message. The results are then
stored (``commit``, default true) by :func:`api.changes_store.commit` in one
transaction, with the change mask moved to ``<data_dir>/changes/run-<id>/mask.tif``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from api.ogc.processes import ASYNC_AND_SYNC, GridgovProcessor, ProcessContext, Progress
from api.settings import Settings
from gis.errors import GisError, NoOverlapError, RasterInputError
from layers.errors import InvalidInput

log = logging.getLogger("gridgov.ogc")

PROCESS_ID = "detect-changes"
UPLOADS = "uploads"  # the inbox's directory of uploaded files
RASTERS = ("before", "after", "before_dsm", "after_dsm")
TIFF_TYPES = ("image/tiff", "image/tiff; application=geotiff",
              "image/tiff; application=geotiff; profile=cloud-optimized")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_REF = 1024
STEPS = 1000  # the job's progress scale: planning 0-20, tiles 20-820, merge, store
POLL_S = 0.5  # how often a quiet child is checked for a dismissed job


class DetectionFailed(RuntimeError):
    """The child process failed for another reason than its inputs (a 500: see the log)."""


# -- the inbox --------------------------------------------------------------------------


def _refuse(name: str, text: str) -> InvalidInput:
    return InvalidInput(f"'{name}': {text}", input=name)


def _show(ref: str) -> str:
    return ref if len(ref) <= 120 else ref[:117] + "..."


def inbox_file(name: str, ref: str, inbox: Path) -> Path:
    """The file ``ref`` (a path in the inbox, or a ``file:`` URL to it) names, resolved;
    anything else is an :class:`InvalidInput` naming the input ``name``."""
    if not ref.strip():
        raise _refuse(name, "an empty path")
    try:
        ref.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(name, "not a usable path (not UTF-8)") from None
    if len(ref) > MAX_REF or "\x00" in ref:
        raise _refuse(name, "not a usable path")
    if SCHEME.match(ref):
        parts = urlsplit(ref)
        if parts.scheme.lower() != "file":
            raise _refuse(name, f"{parts.scheme}: references are not accepted; give a path "
                                "in the server's imagery inbox (or a file: URL to it), or "
                                "upload the file (POST /api/v1/imagery/uploads)")
        if parts.netloc not in ("", "localhost"):
            raise _refuse(name, f"file: URL of another host ({parts.netloc})")
        ref = unquote(parts.path)
    path = Path(ref)
    if ".." in path.parts:
        raise _refuse(name, f"'..' is not allowed in a path ({_show(ref)})")
    root = inbox.resolve()
    try:
        full = (path if path.is_absolute() else root / path).resolve()
        if not full.is_relative_to(root):
            raise _refuse(name, f"{_show(ref)} is outside the imagery inbox")
        if not full.is_file():
            raise _refuse(name, f"no file {_show(ref)} in the imagery inbox")
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise _refuse(name, f"not a usable path ({type(exc).__name__})") from None
    return full


def check_geotiff(path: Path, name: str) -> dict[str, Any]:
    """A GeoTIFF with a CRS, described; :class:`InvalidInput` otherwise."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if src.driver != "GTiff":
                raise _refuse(name, f"a {src.driver} raster, not a GeoTIFF")
            if src.crs is None:
                raise _refuse(name, "the GeoTIFF has no CRS (georeference it first)")
            return {"crs": src.crs.to_string(), "width": src.width, "height": src.height,
                    "bands": src.count}
    except RasterioIOError as exc:
        raise _refuse(name, f"not a GeoTIFF ({str(exc).splitlines()[0][:200]})") from None


def adopt(tmp: Path, digest: str, inbox: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """Check the upload written to ``tmp`` and file it as ``uploads/<digest>.tif`` of the
    inbox (the same bytes always land on the same name); removes ``tmp`` if refused."""
    try:
        info = check_geotiff(tmp, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dest = inbox / UPLOADS / f"{digest[:32]}.tif"
    os.replace(tmp, dest)
    return dest, info


def upload_target(inbox: Path) -> Path:
    """A fresh temporary name in the inbox's uploads directory (made if missing)."""
    folder = inbox / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".part-{uuid.uuid4().hex}"


def store_inline(name: str, value: Mapping[str, Any], inbox: Path) -> tuple[Path, bool]:
    """An OGC qualified value (base64 GeoTIFF) written to the inbox: (path, new file)."""
    media = value.get("mediaType")
    if not isinstance(media, str) or media.replace(" ", "").lower() not in {
            t.replace(" ", "") for t in TIFF_TYPES}:
        raise _refuse(name, "an inline value needs \"mediaType\": \"image/tiff\" (a GeoTIFF, "
                            "base64-encoded)")
    if value.get("encoding", "base64") != "base64":
        raise _refuse(name, "inline values are base64-encoded (\"encoding\": \"base64\")")
    data = value.get("value")
    if not isinstance(data, str):
        raise _refuse(name, "the inline value must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(name, "the inline value is not valid base64") from None
    if not raw:
        raise _refuse(name, "the inline value is empty")
    digest = hashlib.sha256(raw).hexdigest()
    existing = inbox / UPLOADS / f"{digest[:32]}.tif"
    if existing.is_file():
        return existing.resolve(), False
    tmp = upload_target(inbox)
    tmp.write_bytes(raw)
    path, _ = adopt(tmp, digest, inbox, name)
    return path.resolve(), True


# -- the process ------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectInput:
    before: Path
    after: Path
    before_dsm: Path | None
    after_dsm: Path | None
    commit: bool
    method: str
    block: int
    base_url: str | None  # the OGC API's, for links
    tiles: int


def _flag(inputs: Mapping[str, Any], name: str, default: bool) -> bool:
    v = inputs.get(name, default)
    if isinstance(v, Mapping) and "value" in v:
        v = v["value"]
    if not isinstance(v, bool):
        raise _refuse(name, f"true or false, not {v!r}")
    return v


RASTER_SCHEMA = {"oneOf": [
    {"type": "string", "format": "uri-reference",
     "description": "path in the imagery inbox, or a file: URL to it"},
    {"type": "string", "contentEncoding": "base64",
     "contentMediaType": "image/tiff; application=geotiff"},
]}


def _raster(title: str, description: str, required: bool) -> dict[str, Any]:
    return {"title": title, "description": description, "schema": RASTER_SCHEMA,
            "minOccurs": 1 if required else 0, "maxOccurs": 1}


HOW_GIVEN = (" Give a path in the server's imagery inbox (GRIDGOV_IMAGERY_INBOX) as a string "
             "or {\"href\": ...}, the href answered by POST /api/v1/imagery/uploads, or a "
             "small file inline as {\"value\": <base64>, \"mediaType\": \"image/tiff\"}.")


class DetectChangesProcessor(GridgovProcessor):
    """Two orthophotos in, new and removed structures out, stored with their verdicts
    and events (see the module docstring)."""

    METADATA: ClassVar[dict[str, Any]] = {
        "version": "1.0.0",
        "id": PROCESS_ID,
        "title": {"en": "Changes between two drone orthophotos", "zh": "无人机正射影像变化检测"},
        "description": {
            "en": "Compares two orthophotos of the same ground (the later one in any CRS, "
                  "resolution and extent; optionally both flights' surface models) and "
                  "finds new structures, removed structures and other changes. With "
                  "commit (the default) the objects are stored in the collection "
                  "change_detections with the parcel each stands on and a verdict, the "
                  "suspected illegal new structures are filed as events (06001) in their "
                  "micro-grid with before/after chips, once however often the pair is "
                  "compared, and the change mask is kept as a Cloud-Optimised GeoTIFF. "
                  "Run it asynchronously (Prefer: respond-async) and follow the job's "
                  "progress; DELETE the job to stop it (nothing is stored).",
            "zh": "比对两期无人机正射影像（可附DSM），发现新增、拆除的建构筑物，"
                  "入库并对疑似违建按微网格立案（同一对影像只立案一次）。",
        },
        "keywords": ["change detection", "orthophoto", "illegal construction", "变化检测",
                     "违法建设"],
        "jobControlOptions": ASYNC_AND_SYNC,
        "outputTransmission": ["value"],
        "links": [],
        "inputs": {
            "before": _raster("Earlier orthophoto", "GeoTIFF, 3 or 4 bands (uint8 or "
                              "uint16), projected CRS, north-up." + HOW_GIVEN, True),
            "after": _raster("Later orthophoto", "GeoTIFF, any CRS, resolution and "
                             "extent overlapping the earlier one." + HOW_GIVEN, True),
            "before_dsm": _raster("Surface model of the earlier flight", "One band of "
                                  "heights in metres; give both DSMs or neither: height "
                                  "gain then decides." + HOW_GIVEN, False),
            "after_dsm": _raster("Surface model of the later flight", "As before_dsm."
                                 + HOW_GIVEN, False),
            "commit": {
                "title": "Store and file events",
                "description": "true: store the objects in change_detections, file the "
                               "suspected illegal ones as events and keep the change mask; "
                               "false: answer the objects only, store nothing.",
                "schema": {"type": "boolean", "default": True},
                "minOccurs": 0, "maxOccurs": 1,
            },
            "baseline": {
                "title": "Plain differencing",
                "description": "Plain band differencing instead of the change vector "
                               "analysis, for comparison (about one object in four right).",
                "schema": {"type": "boolean", "default": False},
                "minOccurs": 0, "maxOccurs": 1,
            },
            "block": {
                "title": "Tile size (pixels)",
                "description": "Side of the tiles the images are compared in; results do "
                               "not depend on it, memory and progress steps do.",
                "schema": {"type": "integer", "minimum": 128, "maximum": 4096,
                           "default": 256},
                "minOccurs": 0, "maxOccurs": 1,
            },
        },
        "outputs": {
            "result": {
                "title": "The run",
                "description": "run_id (null when not committed), objects and counts by "
                               "kind, verdicts, stored / already_stored, events filed, "
                               "links (rel items: the run's objects in change_detections; "
                               "rel tiles: the change mask as PNG tiles; rel mask: the mask "
                               "as a Cloud-Optimised GeoTIFF; rel related: each event) and "
                               "changes: the objects as a CRS84 GeoJSON FeatureCollection.",
                "schema": {"type": "object", "contentMediaType": "application/json"},
            }
        },
        "example": {"inputs": {"before": "flights/before.tif", "after": "flights/after.tif",
                               "commit": True}},
    }

    def parse(self, inputs: Any) -> DetectInput:
        raise TypeError("detect-changes reads the server's inbox: use parse_request")

    def parse_request(self, inputs: Any, ctx: ProcessContext | None,
                      base_url: str | None) -> DetectInput:
        if ctx is None:
            raise TypeError("detect-changes needs the server's settings (its inbox)")
        if not isinstance(inputs, Mapping):
            raise InvalidInput("'inputs' must be an object")
        unknown = sorted(set(inputs) - set(self.metadata["inputs"]))
        if unknown:
            raise InvalidInput(f"unknown input(s) {', '.join(map(repr, unknown))}; this "
                               f"process takes {', '.join(self.metadata['inputs'])}")
        for name in ("before", "after"):
            if inputs.get(name) is None:
                raise _refuse(name, "required")
        if (inputs.get("before_dsm") is None) != (inputs.get("after_dsm") is None):
            raise _refuse("before_dsm" if inputs.get("before_dsm") is None else "after_dsm",
                          "give both DSMs (before_dsm and after_dsm) or neither")
        commit = _flag(inputs, "commit", True)
        baseline = _flag(inputs, "baseline", False)
        block = inputs.get("block", 256)
        if isinstance(block, bool) or not isinstance(block, int) or not 128 <= block <= 4096:
            raise _refuse("block", f"an integer from 128 to 4096, not {block!r}")
        inbox = ctx.settings.imagery_inbox
        new: list[Path] = []  # uploads made by this request: removed again if refused
        try:
            paths: dict[str, Path | None] = {}
            for name in RASTERS:
                v = inputs.get(name)
                if v is None:
                    paths[name] = None
                elif isinstance(v, str):
                    paths[name] = inbox_file(name, v, inbox)
                elif isinstance(v, Mapping) and isinstance(v.get("href"), str):
                    paths[name] = inbox_file(name, v["href"], inbox)
                elif isinstance(v, Mapping) and "value" in v:
                    path, made = store_inline(name, v, inbox)
                    if made:
                        new.append(path)
                    paths[name] = path
                else:
                    raise _refuse(name, "a path in the imagery inbox, {\"href\": ...} or "
                                        "{\"value\": <base64>, \"mediaType\": \"image/tiff\"}")
            from gis.changes_raster import check_inputs

            try:
                _, _, _, _, work = check_inputs(paths["before"], paths["after"],
                                                paths["before_dsm"], paths["after_dsm"])
            except GisError as exc:
                raise _scrub(exc, inbox) from None
        except BaseException:
            for path in new:
                path.unlink(missing_ok=True)
            raise
        before, after = paths["before"], paths["after"]
        assert before is not None and after is not None  # noqa: S101 - required above
        tiles = -(-work[2] // block) * -(-work[3] // block)
        return DetectInput(before, after, paths["before_dsm"], paths["after_dsm"], commit,
                           "difference" if baseline else "cva", block, base_url, tiles)

    def run(self, ctx: ProcessContext, parsed: DetectInput, progress: Progress
            ) -> tuple[str, Any]:
        settings = ctx.settings
        changes_dir = settings.data_dir.resolve() / "changes"
        staging = changes_dir / f".job-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            done, doc = self._detect(settings, parsed, staging, progress)
            summary: dict[str, Any] = {"run_id": None, "committed": parsed.commit,
                                       **done, "verdicts": {}, "stored": 0,
                                       "already_stored": 0, "events": []}
            if parsed.commit:
                progress(850, STEPS, f"Storing {done['objects']} object(s), filing events")
                stored = self._store(ctx, parsed, doc, staging / "mask.tif", changes_dir)
                summary.update(run_id=stored["run"], verdicts=stored["verdicts"],
                               stored=stored["stored"],
                               already_stored=stored["already_stored"],
                               events=stored["events"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        props = doc.get("properties") or {}
        summary.update(method=props.get("method"), with_dsm=props.get("with_dsm"),
                       accuracy_note=props.get("accuracy_note"),
                       links=_links(parsed.base_url or _base(settings), summary),
                       changes=doc)
        return "application/json", summary

    @staticmethod
    def _detect(settings: Settings, parsed: DetectInput, staging: Path, progress: Progress
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the child process; (its summary, the GeoJSON) or the fault it reported."""
        job = {"before": str(parsed.before), "after": str(parsed.after),
               "before_dsm": str(parsed.before_dsm) if parsed.before_dsm else None,
               "after_dsm": str(parsed.after_dsm) if parsed.after_dsm else None,
               "workers": settings.changes_workers, "block": parsed.block,
               "method": parsed.method, "out": str(staging / "changes.geojson"),
               "mask": str(staging / "mask.tif") if parsed.commit else None}
        (staging / "job.json").write_text(json.dumps(job))
        progress(0, STEPS, "Starting the comparison")
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, our module, our file
            [sys.executable, "-m", "gis.changes_worker", str(staging / "job.json")],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, encoding="utf-8")
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc, lines), daemon=True,
                         name="changes-worker-out").start()
        state = (0, STEPS, "Starting the comparison")
        result: dict[str, Any] | None = None
        fault: dict[str, Any] | None = None
        try:
            while True:
                try:
                    line = lines.get(timeout=POLL_S)
                except queue.Empty:
                    progress(*state)  # raises JobCancelled once the job is dismissed
                    continue
                if line is None:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("change worker: %s", line.rstrip())
                    continue
                if msg.get("phase") == "planning":
                    state = (10, STEPS, "Checking the pair, fitting colours and thresholds")
                elif "tiles" in msg:
                    d, t = msg["tiles"]
                    state = (20 + 800 * d // max(t, 1), STEPS, f"{d} of {t} tiles compared")
                elif msg.get("phase") == "merging":
                    state = (820, STEPS, "Writing the change mask and the objects")
                elif "done" in msg:
                    result = msg["done"]
                elif "error" in msg:
                    fault = msg
                progress(*state)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # stopped (dismissed, server stopping) or failed here
                proc.kill()
                proc.wait()
        if fault is not None:
            kind = {"NoOverlapError": NoOverlapError, "RasterInputError": RasterInputError
                    }.get(fault.get("type", ""))
            if kind is not None:
                raise _scrub(kind(str(fault["error"]), **(fault.get("extensions") or {})),
                             settings.imagery_inbox)
            raise DetectionFailed(f"change detection failed: {fault['error']}")
        if code != 0 or result is None:
            raise DetectionFailed(f"the change detector stopped with exit status {code}")
        doc = json.loads((staging / "changes.geojson").read_text())
        return result, doc

    @staticmethod
    def _store(ctx: ProcessContext, parsed: DetectInput, doc: dict[str, Any], mask: Path,
               changes_dir: Path) -> dict[str, Any]:
        from api.changes_store import commit

        made: list[Path] = []

        def place(run_id: int) -> Path:
            folder = changes_dir / f"run-{run_id}"
            folder.mkdir(parents=True, exist_ok=True)
            made.append(folder)
            dest = folder / "mask.tif"
            os.replace(mask, dest)
            return dest

        try:
            return commit(ctx.settings, ctx.database_url, parsed.before, parsed.after, doc,
                          mask=place)
        except BaseException:
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
            raise


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None  # noqa: S101 - opened with PIPE
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def _scrub(exc: GisError, inbox: Path) -> GisError:
    """The same fault with the server's inbox path taken out of its message."""
    text = str(exc)
    for root in {str(inbox.resolve()), str(inbox)}:
        text = text.replace(root.rstrip("/") + "/", "")
    return type(exc)(text, **exc.extensions)


def _base(settings: Settings) -> str:
    return (settings.public_url or "").rstrip("/") + "/ogc"


def _links(ogc: str, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    root = ogc[: -len("/ogc")] if ogc.endswith("/ogc") else ogc
    run_id = summary.get("run_id")
    if run_id is None:
        return []
    links: list[dict[str, Any]] = [
        {"rel": "items", "type": "application/geo+json",
         "title": "The objects this run stored (change_detections)",
         "href": f"{ogc}/collections/change_detections/items?run_id={run_id}&limit=1000"},
        {"rel": "tiles", "type": "image/png", "templated": True,
         "title": "The change mask as map tiles",
         "href": f"{root}/tiles/changes/{run_id}/{{z}}/{{x}}/{{y}}.png"},
        {"rel": "mask", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
         "title": "The change mask (0 none, 1 new, 2 removed, 3 other)",
         "href": f"{root}/tiles/changes/{run_id}/mask.tif"},
    ]
    for event_id in summary.get("events") or []:
        links.append({"rel": "related", "type": "application/json",
                      "title": f"Event {event_id} (suspected illegal structure)",
                      "href": f"{root}/api/v1/events/{event_id}"})
    return links

