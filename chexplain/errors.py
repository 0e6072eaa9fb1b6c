"""What can go wrong that is not a bug: one base, ChexplainError, and its kinds.

A command turns a ChexplainError (and the system's OSError: a file that cannot be written, a
port that is taken) into one line naming what and why, and exits non-zero; any other
exception is a bug in chexplain and shows its traceback. So every refusal a user can cause
(a flag's value, a file, a model, an engine, an operator without a rule, a missing package)
raises one of these kinds, and nothing else is caught by the commands.

Some kinds also derive from the builtin their callers catch (ValueError, RuntimeError,
ImportError), so code written against the builtin keeps working.
"""

from __future__ import annotations


class ChexplainError(Exception):
    """A refusal the user can act on; its message is the one line a command prints."""


class ConfigError(ChexplainError, ValueError):
    """A setting that cannot be used: a flag's value, a configuration file's entry, a request the
    graph cannot answer; named with its source."""


class InputError(ChexplainError):
    """An input that cannot be used; the rest of a batch goes on without it."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class CheckpointError(ChexplainError):
    """A checkpoint that cannot be loaded, with the reason."""


class ModelNotFoundError(ChexplainError):
    """No model where a name or path points: no exported graph, no such architecture, a file
    that is not a chexplain graph."""


class ParityError(ChexplainError):
    """An exported graph that does not match PyTorch within tolerance."""


class EngineError(ChexplainError, RuntimeError):
    """A TensorRT engine that cannot be built, loaded or run on this machine."""


class EngineMismatchError(EngineError):
    """An engine built for another GPU or TensorRT version, or without its sidecar."""


class UnsupportedOperator(ChexplainError, ValueError):
    """An operator without a rule: the explainer refuses to build rather than pass it silently."""


class MissingDependency(ChexplainError, ImportError):
    """An optional module is not installed; the message says how to install it."""
