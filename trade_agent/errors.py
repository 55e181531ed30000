"""Error hierarchy.

Every failure the library raises on purpose is a :class:`TradeAgentError`. The CLI and the
stage scripts catch the root class in one place and print its message as a single line, so
each message must say what was wrong, where (file, column, row, key) and how to fix it.

``exit_code`` follows the usual Unix split: 2 for bad input or usage (the user can fix it),
1 for everything else.
"""

from __future__ import annotations


class TradeAgentError(Exception):
    """Root of all errors raised by trade-agent on purpose."""

    exit_code: int = 1


class InputError(TradeAgentError):
    """The user's input (data, params, CLI arguments, ids) is wrong; exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A params.yaml section has an unknown key, a wrong type or an invalid value."""


class DataSourceError(InputError):
    """A data file is missing, unreadable or in a format we cannot interpret."""


class DataValidationError(InputError):
    """Market data violates a validation rule (names file, column and row)."""


class SchemaError(InputError):
    """Data does not have the columns a fitted pipeline or model expects."""


class InsufficientDataError(InputError):
    """Too few rows for the configured pipeline; the message states the minimum."""


class PreprocessorError(TradeAgentError):
    """A preprocessing pipeline cannot be built, saved or loaded."""


class PreprocessorNotFoundError(PreprocessorError, InputError):
    """No saved preprocessor has the requested id."""


class IntegrityError(TradeAgentError):
    """A stored artifact does not match its recorded checksum."""


class TrainingError(TradeAgentError):
    """Training cannot continue (out of memory below the minimum batch, failed distributed run)."""


class UnsafePathError(IntegrityError):
    """A name read from a store, an index, an export or a JSON file would leave its folder."""


class TrainingInterrupted(TradeAgentError):
    """The user pressed Ctrl-C; the message says where and what resumes (exit code 130, as a shell would)."""

    exit_code = 130
