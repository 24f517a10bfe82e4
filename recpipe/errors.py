"""The small error hierarchy of recpipe.

Every error message names the bad value and what was expected, so that a person
can fix the input without reading a traceback (entry points print only the message).
"""

from __future__ import annotations


class RecpipeError(Exception):
    """Base class of every error recpipe raises on purpose."""


class ConfigError(RecpipeError):
    """params.yaml or an override is invalid (unknown key, wrong type, bad value)."""


class MissingContentError(ConfigError, ValueError):
    """A content model was built on data without usable item content."""


class DataImportError(RecpipeError):
    """A raw data set cannot be read into the canonical tables (format problem)."""


class DataValidationError(RecpipeError):
    """Canonical tables failed validation; carries the report that names every failure."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class FetchError(RecpipeError):
    """A data set could not be downloaded or failed its checksum."""


class ArtifactError(RecpipeError):
    """An artifact directory is missing, incomplete or cannot be loaded."""


class StageError(RecpipeError):
    """A pipeline stage cannot run (missing inputs, unknown stage name)."""


class SplitError(RecpipeError):
    """Events cannot be split as asked (e.g. an empty test part); names the params to change."""


class TrainingError(RecpipeError):
    """Training cannot go on (a NaN or infinite loss, an unusable device); names where."""


class RegistryError(RecpipeError):
    """The MLflow model registry cannot do what was asked (unknown version, no alias to
    roll back to, an unreachable store, a promotion lock held too long); names the value."""


class RequestError(RecpipeError, ValueError):
    """A serving request breaks a limit or is inconsistent (k above the limit, a session
    too long, lists of different lengths); ``field`` names the request field.

    The service answers it with HTTP 400 and the message; unknown ids are not errors
    (they take the cold-start path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
