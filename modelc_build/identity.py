"""What a release may be called: one rule for names and versions, checked on every recipe load
and again by every store before it touches a path or a tag (no cached result stands in for it).

Names: lower-case letters, digits, '.', '_', '-' (a folder name and an OCI repository component).
Versions: PEP 440 versions (1.0.0, 1.2.0rc1, 2.0.0.post1), ordered by PEP 440, without a local
'+' part (an OCI tag cannot hold '+'), so that a version is also a folder name and an OCI tag.
"""
from __future__ import annotations

import re

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_CHARACTERS = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
SHOWN = 80  # of a rejected value, the characters a message shows


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


def name_problem(name: object) -> str | None:
    if isinstance(name, str) and NAME.fullmatch(name) and name not in (".", ".."):
        return None
    return (f"{_shown(name)} is not a release name: use lower-case letters, digits, '.', '_' and '-', starting with "
            "a letter or digit (at most 64 characters)")


def version_problem(version: object) -> str | None:
    from packaging.version import InvalidVersion, Version

    if isinstance(version, str) and VERSION_CHARACTERS.fullmatch(version):
        try:
            Version(version)
            return None
        except InvalidVersion:
            pass
    return (f"{_shown(version)} is not a release version: use a PEP 440 version such as 1.0.0, 1.2.0rc1 or "
            "2.0.0.post1 (no '+local' part), which orders releases")
