"""Errors the engine raises across the boundary, for the API to map onto HTTP statuses."""

from __future__ import annotations


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full (``scheduler.max_waiting``); the request was not admitted
    and may be retried later."""


class EngineDeadError(RuntimeError):
    """The engine stopped (its loop died, a tensor-parallel worker was lost): the request
    cannot finish here; the server is going down for its supervisor to restart it."""
