"""Dask workers that run a detection's tiles, bounded as the CLI's own process is.

Imported only when the tiles go to a Dask scheduler (``distributed`` is heavy to
import). :class:`BoundMemory` is registered with the scheduler by
:func:`gis.changes_raster.iter_tiles` before the first tile is sent, so every worker
of the cluster, and every worker that joins it later, applies
:func:`gis.changes_raster.bound_memory` once: GDAL's block cache held to
``GDAL_CACHE_MB`` (unless the worker's environment sets ``GDAL_CACHEMAX``), each band's
index of its cached blocks kept to what it holds, freed blocks given back to the
system. Without it a worker's memory grew with the image it worked through (the block
index) and its block cache took GDAL's default, 5 % of its machine's memory.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class BoundMemory(WorkerPlugin):
    """:func:`~gis.changes_raster.bound_memory` in each worker process, once."""

    name = "gridgov-bound-memory"
    idempotent = True  # registered by every detection; set up once per worker

    def setup(self, worker: Any) -> None:
        from gis.changes_raster import bound_memory

        bound_memory()
