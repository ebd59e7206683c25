"""``gridgov changes detect --commit`` (and the OGC process): store a detection, file the
suspected illegal structures as events with before/after chips as evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from api.settings import Settings
from layers import db


def commit(settings: Settings, url: str, before: Path, after: Path, doc: Mapping[str, Any],
           mask: Path | Callable[[int], Path] | None = None) -> dict[str, Any]:
    """Store ``doc`` (the CRS84 GeoJSON of a detection of ``before`` → ``after``) in one
    transaction; files written for evidence are removed again if it fails.

    ``mask`` is the change mask's path, or a function that, given the new run's id, puts
    the mask where it belongs (``<data_dir>/changes/run-<id>/mask.tif``) and returns that
    path; within the transaction, so a mask placed by a failed store is removed again.
    The mask is also copied as a COG into ``<data_dir>/imagery`` and registered as imagery
    of the run (``run-<id>-mask``, served by ``/tiles/changes/<id>``); ``result["mask"]``
    names it. An unusable mask refuses the whole commit."""
    from gis.chips import chip
    from gis.errors import GisError
    from layers import changes, imagery, photos

    props = doc.get("properties") or {}
    key = changes.pair_key(before, after, str(props.get("method", "?")),
                           bool(props.get("with_dsm")))
    root = settings.photos_dir
    prepared_fixed = (imagery.prepare(Path(mask), settings.imagery_dir, "change_mask")
                      if mask is not None and not callable(mask) else None)

    def evidence(feature: Mapping[str, Any]) -> list[bytes]:
        import shapely.geometry

        b = shapely.geometry.shape(feature["geometry"]).bounds
        out = []
        for path in (before, after):
            try:
                out.append(chip(path, b))
            except GisError:
                continue
        return out

    async def run() -> dict[str, Any]:
        written: list[str] = []
        placed: list[Path] = []
        cogs: list[Path] = [prepared_fixed[0]] if prepared_fixed is not None else []
        fixed = None if callable(mask) else mask
        async with await db.aconnect(url) as conn:
            try:
                async with conn.transaction():
                    result = await changes.store(
                        conn, key, before.name, after.name, doc,
                        mask_path=str(fixed) if fixed else None, evidence=evidence,
                        photo_root=root, written=written)
                    if callable(mask):
                        placed.append(mask(result["run"]))
                        await conn.execute("UPDATE change_runs SET mask_path = %s WHERE id = %s",
                                           (str(placed[0]), result["run"]))
                        prepared = await asyncio.to_thread(
                            imagery.prepare, placed[0], settings.imagery_dir, "change_mask")
                    else:
                        prepared = prepared_fixed
                    if prepared is not None:
                        if prepared is not prepared_fixed:
                            cogs.append(prepared[0])
                        result["mask"] = await imagery.register_mask(
                            conn, result["run"], *prepared)
                    return result
            except BaseException:
                photos.remove(root, *written)
                for path in placed + cogs:
                    path.unlink(missing_ok=True)
                raise

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    # called from a running loop (a Jupyter kernel): run on a thread of its own
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
