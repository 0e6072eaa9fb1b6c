"""Errors that name the input and the reason, for one-line reports."""

from __future__ import annotations


class InputError(Exception):
    """An input that cannot be used; the rest of a batch goes on without it."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelNotFoundError(Exception):
    """No exported graph where a model name or path points."""
