"""The README's exit-code table is the contract: every documented code has its error class, and
every error class's code is documented (behaviour per code is checked by the e2e tests)."""
from __future__ import annotations

import re
from pathlib import Path

from modelc_build import errors

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_codes() -> dict[int, str]:
    table = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.M)}


def error_classes() -> list[type[errors.ModelcError]]:
    return [value for value in vars(errors).values()
            if isinstance(value, type) and issubclass(value, errors.ModelcError) and value is not errors.ModelcError]


def test_every_error_class_has_a_documented_code_and_every_code_a_class() -> None:
    documented = documented_codes()
    used = {cls.exit_code for cls in error_classes()}
    assert used <= set(documented), f"undocumented exit codes: {used - set(documented)}"
    assert set(documented) - used == {0, 1}  # success and internal errors have no error class


def test_the_cli_help_lists_the_same_codes() -> None:
    from modelc_build.cli import main

    listed = {int(code) for code in re.findall(r"\b(\d+) [a-z]", main.help or "")}
    assert listed == set(documented_codes())


def test_first_line_never_fails_on_an_empty_message() -> None:
    assert errors.first_line(ValueError("")) == "ValueError"
    assert errors.first_line(ValueError("\n\n  second line\nthird")) == "second line"
