"""User errors, each with a documented exit code and a message that says what to do.

A `ModelcError` is something the user can fix (a recipe, a file, a gate); anything else that
escapes is a bug in modelc and exits with code 1 and a traceback.

Exit codes (also in the README):
    0  success
    1  internal error (a bug in modelc: please report it with the --debug output)
    2  the recipe is invalid (schema or cross-field check)
    3  an input is missing or unusable (weights, model file, data folder, image)
    4  an accuracy gate was missed
    5  the artifact store refused the release (an existing version with other content, I/O)
    6  a backend cannot run here (optional dependency missing, TensorRT without a GPU)
    7  a model failed to export or compile
    8  verification failed: a signature is missing, invalid or from another signer, or a file or
       downloaded blob does not match its signed digest (nothing was written)
"""
from __future__ import annotations

from dataclasses import dataclass


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


class ModelcError(Exception):
    """Base class of every error a user can act on. `details`: a long log (an exporter's dump)
    that belongs in a file, not on the terminal; the build writes it beside the failed report and
    names the file (instance attributes survive the trip back from a step's process)."""

    exit_code = 1

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class RecipeProblem:
    """One problem found in a recipe, located by file, line, column and key path."""

    file: str
    line: int
    column: int
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{where}:{key} {self.message}"


class RecipeError(ModelcError):
    """The recipe failed validation; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[RecipeProblem]) -> None:
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__("\n".join(lines))


class UsageError(ModelcError):
    """Options that cannot work together or cannot be used (e.g. a signing key that is no key)."""

    exit_code = 2


class InputError(ModelcError):
    """A file the recipe points at is missing, empty, unreadable or does not fit the model."""

    exit_code = 3


class GateFailed(ModelcError):
    """At least one accuracy gate was missed; the report is written before this is raised."""

    exit_code = 4


class StoreError(ModelcError):
    """The artifact store refused or failed to take a release."""

    exit_code = 5


class BackendUnavailable(ModelcError):
    """A backend's library or hardware is not present on this machine."""

    exit_code = 6

    @classmethod
    def missing_package(cls, backend: str, module: str, extra: str) -> BackendUnavailable:
        return cls(f"the {backend} backend needs the Python module '{module}', which is not installed: "
                   f"run `pip install 'modelc-build[{extra}]'` or remove the {backend} target from the recipe")


class CompileError(ModelcError):
    """A library failed while exporting or compiling the model."""

    exit_code = 7


class VerificationError(ModelcError):
    """A release failed verification: signature, signer, or a file's digest. Nothing was written."""

    exit_code = 8
