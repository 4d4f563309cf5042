"""The errors of LoRA serving."""

from __future__ import annotations


class LoraLoadError(ValueError):
    """An adapter that cannot be served (unreadable, unsupported, or not for this model)."""


class LoraNotFoundError(KeyError):
    """A request names an adapter this server does not serve."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown LoRA adapter"
