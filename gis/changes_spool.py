"""The changed objects of one detection, kept on disk as they are found.

A detection of a large flight can find tens of thousands of objects; held in memory
they would make the run's peak grow with the image. :class:`ObjectSpool` is a scratch
SQLite file (with an R*Tree on the objects' pixel extents, for writing the mask block
by block) in a temporary directory of its own, removed when the spool is closed or
collected. It reads like a sequence of :class:`~gis.changes_raster.ChangeObject` in a
fixed order (``rank``, given by the merge: the same for any tiling of work between
threads or Dask workers), streamed from disk. :class:`Parking` keeps the merge's waiting
outlines beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import shapely

if TYPE_CHECKING:
    from gis.changes_raster import ChangeObject

# Objects wait in memory until a batch is written: at most BATCH of them or BATCH_BYTES
# of outlines (WKB, both CRSs), whichever comes first. With 500 objects a batch held
# ~1 MB of outlines at its fullest (2.2 kB an object on the demo pair, more for fields)
# and writing it took ~1 MB more (0.2 MB for 64); the 1 GB bench run's peak was set
# while one was written, as the tiles' own peaks met it.
BATCH = 64
BATCH_BYTES = 256 * 1024
CACHE_KIB = 1024  # SQLite page cache

_SCHEMA = (
    "CREATE TABLE objects (rank INTEGER PRIMARY KEY, kind TEXT NOT NULL, score REAL NOT NULL,"
    " cue TEXT NOT NULL, area_m2 REAL NOT NULL, measures TEXT NOT NULL, geom BLOB NOT NULL,"
    " pixel BLOB NOT NULL)",
    "CREATE VIRTUAL TABLE extents USING rtree(rank, minx, maxx, miny, maxy)",
)
_COLUMNS = "rank, kind, score, cue, area_m2, measures, geom, pixel"
_SELECT_ALL = "SELECT " + _COLUMNS + " FROM objects ORDER BY rank"
_SELECT_AT = "SELECT " + _COLUMNS + " FROM objects ORDER BY rank LIMIT 1 OFFSET ?"
_SELECT_IN = (
    "SELECT o.pixel, o.kind FROM extents e JOIN objects o ON o.rank = e.rank"
    " WHERE e.minx <= ? AND e.maxx >= ? AND e.miny <= ? AND e.maxy >= ? ORDER BY o.rank"
)


def _close(db: sqlite3.Connection, directory: str) -> None:
    db.close()
    shutil.rmtree(directory, ignore_errors=True)


class ObjectSpool(Sequence["ChangeObject"]):
    """Changed objects on disk: :meth:`add` while merging, then read in ``rank`` order."""

    def __init__(self, directory: str | Path | None = None) -> None:
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="gridgov-changes-",
                                          dir=None if directory is None else str(directory)))
        db = sqlite3.connect(self.path / "objects.sqlite", isolation_level=None,
                             check_same_thread=False)
        self._finalizer = weakref.finalize(self, _close, db, str(self.path))
        self._db = db
        self._lock = threading.Lock()
        # SQLite's page cache is per connection, and fills as the file grows: 1 MB is
        # full at any real flight, so the process does not grow with the spool's size.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}",
                       "temp_store=FILE"):
            db.execute("PRAGMA " + pragma)
        for statement in _SCHEMA:
            db.execute(statement)
        self._batch: list[tuple[Any, ...]] = []
        self._batch_bytes = 0
        self._extents: list[tuple[int, float, float, float, float]] = []
        self._len = 0
        self._counts: dict[str, int] = {}

    # ---- writing ---------------------------------------------------------------------

    def add(self, rank: int, obj: ChangeObject) -> None:
        """One object, under its place in the order (unique)."""
        minx, miny, maxx, maxy = obj.pixel_geometry.bounds
        geom, pixel = shapely.to_wkb(obj.geometry), shapely.to_wkb(obj.pixel_geometry)
        self._batch.append((rank, obj.kind, obj.score, obj.cue, obj.area_m2,
                            json.dumps(obj.measures), geom, pixel))
        self._batch_bytes += len(geom) + len(pixel)
        self._extents.append((rank, minx, maxx, miny, maxy))
        self._len += 1
        self._counts[obj.kind] = self._counts.get(obj.kind, 0) + 1
        if len(self._batch) >= BATCH or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    @property
    def waiting(self) -> tuple[int, int]:
        """Objects added but not yet written, and the bytes of their outlines."""
        return len(self._batch), self._batch_bytes

    def flush(self) -> None:
        if not self._batch:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 self._batch)
            self._db.executemany("INSERT INTO extents VALUES (?, ?, ?, ?, ?)", self._extents)
            self._db.execute("COMMIT")
        self._batch, self._extents, self._batch_bytes = [], [], 0

    # ---- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def counts(self) -> dict[str, int]:
        """Objects by kind."""
        return dict(self._counts)

    @staticmethod
    def _object(row: tuple[Any, ...]) -> ChangeObject:
        from gis.changes_raster import ChangeObject

        _rank, kind, score, cue, area, measures, geom, pixel = row
        return ChangeObject(kind=kind, score=score, cue=cue, area_m2=area,
                            geometry=shapely.from_wkb(geom),
                            pixel_geometry=shapely.from_wkb(pixel),
                            measures=json.loads(measures))

    def __iter__(self) -> Iterator[ChangeObject]:
        self.flush()
        cursor = self._db.execute(_SELECT_ALL)
        while True:
            with self._lock:
                rows = cursor.fetchmany(BATCH)
            if not rows:
                return
            for row in rows:
                yield self._object(row)

    @overload
    def __getitem__(self, index: int) -> ChangeObject: ...

    @overload
    def __getitem__(self, index: slice) -> list[ChangeObject]: ...

    def __getitem__(self, index: int | slice) -> ChangeObject | list[ChangeObject]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("change object index out of range")
        self.flush()
        with self._lock:
            row = self._db.execute(_SELECT_AT, (index,)).fetchone()
        return self._object(row)

    def within(self, box: tuple[float, float, float, float]
               ) -> list[tuple[shapely.Geometry, str]]:
        """(pixel outline, kind) of the objects whose extent meets ``box`` (minx, miny,
        maxx, maxy, pixels of the earlier grid), in order."""
        self.flush()
        minx, miny, maxx, maxy = box
        with self._lock:
            rows = self._db.execute(_SELECT_IN, (maxx, minx, maxy, miny)).fetchall()
        return [(shapely.from_wkb(pixel), kind) for pixel, kind in rows]

    def close(self) -> None:
        """Remove the scratch file (also done when the spool is collected)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


class Parking:
    """Outlines waiting on disk: the merge's pieces that touch a tile edge whose
    neighbour has not come yet. There are more of them the taller the image (one
    stripe's right-hand edge) and, between stripe rows, the wider; held as geometries
    they made the merge's memory grow with the image (~15,000 vertices at most over the
    bench's 1 GB input). Each is an append-only record in a scratch file (WKB, exact);
    what stays in memory is its offset and length. Taken back once, when its object is
    complete. Not shared between threads (the merge runs in one).
    """

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "pieces.wkb"
        self._file = open(self.path, "w+b", buffering=0)  # noqa: SIM115 (closed in close)
        self._at: dict[Any, tuple[int, int]] = {}
        self._end = 0

    def put(self, key: Any, geom: shapely.Geometry) -> None:
        """Park ``geom`` under ``key`` (unique while parked)."""
        if key in self._at:
            raise KeyError(f"{key!r} already parked")
        data = shapely.to_wkb(geom)
        self._file.write(data)
        self._at[key] = (self._end, len(data))
        self._end += len(data)

    def take(self, key: Any) -> shapely.Geometry:
        """The geometry parked under ``key``, which is no longer parked."""
        offset, size = self._at.pop(key)
        return shapely.from_wkb(os.pread(self._file.fileno(), size, offset))

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    @property
    def written(self) -> int:
        """Bytes written to the scratch file so far (records taken are not reclaimed)."""
        return self._end

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
