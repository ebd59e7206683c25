"""Faults raised by tiles/. Nothing here knows HTTP.

``TilesError`` is the base.  Each fault also derives from the ``layers`` fault of the same
kind (``InvalidInput``, ``NotFound``), so the one table in ``api/problems.py`` answers it
(400, 404) without a row of its own.
"""

from __future__ import annotations

from layers.errors import InvalidInput, LayersError, NotFound


class TilesError(LayersError):
    """Base of every fault raised by tiles/."""


class InvalidTile(TilesError, InvalidInput):
    """A tile address outside its tile matrix set (zoom, column or row out of range)."""


class UnknownTileMatrixSet(TilesError, NotFound):
    """A tile matrix set that is not served here."""


class UnknownTileset(TilesError, NotFound):
    """A tileset (collection) that is not published."""
