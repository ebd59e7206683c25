"""``gridgov changes detect --commit`` (and the OGC process): store a detection, file the
suspected illegal structures as events with before/after chips as evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from api.settings import Settings
from layers import db


def commit(settings: Settings, url: str, before: Path, after: Path, doc: Mapping[str, Any],
           mask: Path | None = None) -> dict[str, Any]:
    """Store ``doc`` (the CRS84 GeoJSON of a detection of ``before`` → ``after``) in one
    transaction; files written for evidence are removed again if it fails.

    ``mask`` (the change mask GeoTIFF) is copied as a COG into ``<data_dir>/imagery`` and
    registered as imagery of the run (``run-<id>-mask``, served by ``/tiles/changes/<id>``);
    ``result["mask"]`` names it. An unusable mask refuses the whole commit."""
    from gis.chips import chip
    from gis.errors import GisError
    from layers import changes, imagery, photos

    props = doc.get("properties") or {}
    key = changes.pair_key(before, after, str(props.get("method", "?")),
                           bool(props.get("with_dsm")))
    root = settings.photos_dir
    prepared = (imagery.prepare(Path(mask), settings.imagery_dir, "change_mask")
                if mask is not None else None)

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
        async with await db.aconnect(url) as conn:
            try:
                async with conn.transaction():
                    result = await changes.store(
                        conn, key, before.name, after.name, doc,
                        mask_path=str(mask) if mask else None, evidence=evidence,
                        photo_root=root, written=written)
                    if prepared is not None:
                        result["mask"] = await imagery.register_mask(
                            conn, result["run"], *prepared)
                    return result
            except BaseException:
                photos.remove(root, *written)
                if prepared is not None:
                    prepared[0].unlink(missing_ok=True)
                raise

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    # called from a running loop (a Jupyter kernel): run on a thread of its own
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
