"""Faults raised by gis/ (pure computation)."""

from __future__ import annotations

from typing import Any


class GisError(Exception):
    """Base of every fault raised by gis/.

    Keyword arguments are kept as ``extensions``: machine-readable detail (such as the
    position of the bad point) that the API adds to its problem+json answer.
    """

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.extensions = extensions


class CRSError(GisError):
    """A coordinate reference system that is unknown or not usable here."""


class RasterInputError(GisError):
    """A raster given to the change detector that it cannot use (bands, type, CRS, file)."""


class NoOverlapError(RasterInputError):
    """Two orthophotos (or an orthophoto and its DSM) that do not cover common ground."""
