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
    9  a network failure: a registry could not be reached, or did not answer within --timeout
   10  a local folder cannot be written: read-only, permission denied, a file in its way, disk full
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
    report: object | None = None  # a build's report.Report, where the build got that far
    report_folder: object | None = None  # the folder its report files were kept in

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def amended(self, note: str) -> ModelcError:
        """A copy of this error whose message ends with `note` (the raised error stays as it was)."""
        import copy

        longer = copy.copy(self)
        longer.message = f"{self.message}{note}"
        longer.args = (longer.message,)
        return longer

    def with_report(self, report: object, folder: object) -> ModelcError:
        """A copy of this error that carries the build's report and where its files were kept."""
        import copy

        carrying = copy.copy(self)
        carrying.report, carrying.report_folder = report, folder
        return carrying


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


class MissingStep(InputError):
    """A job of a fanned-out pipeline needs a step another job makes, and the step cache lacks it:
    the job never recomputes it (a step key runs in one job per pipeline)."""


class GateFailed(ModelcError):
    """At least one accuracy gate was missed; the report is written before this is raised.
    `report` (a report.Report) and `report_folder` (where its files were kept) come with it when a
    build raised it, so that callers read the verdicts rather than the message."""

    exit_code = 4

    def __init__(self, message: str, report: object | None = None, report_folder: object | None = None) -> None:
        super().__init__(message)
        self.report, self.report_folder = report, report_folder


class StoreError(ModelcError):
    """The artifact store refused or failed to take a release."""

    exit_code = 5


class VersionTaken(StoreError):
    """The version is stored already with other content (or judged otherwise): a version is immutable."""


class NetworkError(StoreError):
    """A registry could not be reached, or did not answer within the operation's time budget."""

    exit_code = 9


class WriteError(ModelcError):
    """A folder modelc writes (the step cache, a store folder, a destination) cannot be written."""

    exit_code = 10


WRITE_ERRNOS = {"ENOSPC": "no space left on the device", "EDQUOT": "the disk quota is used up",
                "EROFS": "the file system is read-only", "EACCES": "permission denied", "EPERM": "permission denied",
                "ENOTDIR": "a file is where a folder must be"}
STRERRORS = {"No space left on device": "ENOSPC", "Disk quota exceeded": "EDQUOT", "Read-only file system": "EROFS",
             "Permission denied": "EACCES", "Not a directory": "ENOTDIR"}


def write_problem(error: BaseException, where: str) -> WriteError | None:
    """A one-line WriteError naming the cause (ENOSPC, EROFS, …) when `error`, or what caused it,
    is one of those operating-system errors (shutil.Error's list of failed copies included); else None."""
    import errno
    import shutil

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code, name = "", None
        if isinstance(current, OSError) and current.errno is not None:
            code, name = errno.errorcode.get(current.errno, ""), current.filename
        elif isinstance(current, shutil.Error) and current.args and isinstance(current.args[0], list) and current.args[0]:
            text = str(current.args[0][0][-1])  # (source, destination, why) of the first failed copy
            code = next((c for words, c in STRERRORS.items() if words in text), "")
        if code in WRITE_ERRNOS:
            target = f" ({name})" if name else ""
            fix = "free space there" if code in ("ENOSPC", "EDQUOT") else "give a folder that can be written"
            return WriteError(f"{where}{target}: {WRITE_ERRNOS[code]} ({code}): {fix}")
        current = current.__cause__ or current.__context__
    return None


class CodeNotRun(Exception):
    """A key that only the recipe's own Python code could decide (a data function's output), asked
    for where recipe code must not run (`modelc plan`, on untrusted pull requests)."""


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
