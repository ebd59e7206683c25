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


class Conflict(LayersError):
    """The request is valid but the thing is not in a state that allows it (409).

    ``allowed`` (in ``extensions``) lists what the asker may do instead."""

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class Refused(LayersError):
    """Well-formed input that cannot be accepted as it stands (422): a report outside the
    territory, handling without an "after" photo."""

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.extensions = extensions


class NotAllowed(LayersError):
    """The asker is known but may not do this (403): another grid's event, a role that
    does not approve extensions."""


class RateLimited(LayersError):
    """Too many requests from one client in the window (429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.extensions = {"retry_after_s": retry_after}
