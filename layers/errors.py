"""Faults raised by layers/. api/ maps them to HTTP problems; nothing here knows HTTP."""

from __future__ import annotations


class LayersError(Exception):
    """Base of every fault raised by layers/.

    ``extensions`` are extra members for the problem document the API answers with.
    """

    extensions: dict[str, object] = {}  # noqa: RUF012 - never mutated; overridden per instance


class ClusterError(LayersError):
    """The local PostgreSQL cluster could not be created, started or stopped."""


class DatabaseNotReady(LayersError):
    """The database is unreachable or its schema is not at the current migration."""


class ImportRefused(LayersError):
    """A grid import was refused; ``report`` says why."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class InvalidInput(LayersError):
    """Input data that cannot be used as given (unreadable file, missing column, bad point)."""

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class NotFound(LayersError):
    """What was asked for does not exist."""

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions
