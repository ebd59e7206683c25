"""Faults raised by gis/ (pure computation)."""

from __future__ import annotations


class GisError(Exception):
    """Base of every fault raised by gis/."""


class CRSError(GisError):
    """A coordinate reference system that is unknown or not usable here."""
