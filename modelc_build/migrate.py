"""Recipes that survive upgrades: every key the recipe format (format_version 1) has lost or renamed
since its first release, what replaced it, and how `modelc migrate` rewrites a recipe that uses it.

A build or `modelc validate` of an old recipe fails on such a key with one line naming the
replacement, the modelc version that changed it, and the command that rewrites it. The rewrite
keeps the recipe's comments and layout (ruamel.yaml, round-trip); a test migrates a recipe with
every key listed here and builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from modelc_build.errors import InputError

Section = Any  # a YAML mapping as ruamel.yaml loads it (a dict that keeps its comments and order)


@dataclass(frozen=True)
class KeyChange:
    """A key the recipe format no longer takes, and what to write instead."""

    path: tuple[str, ...]  # where it was, e.g. ("verify", "second_isa")
    changed_in: str  # the modelc version (and date) that removed or renamed it
    replacement: str  # the key(s) to use now
    why: str
    rewrite: Callable[[Section, Any], list[str]]  # (its section, its value) -> writes the replacement, returns notes

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def message(self) -> str:
        return (f"'{self.path[-1]}' was removed in modelc {self.changed_in}: {self.why}; use {self.replacement} "
                "instead (`modelc migrate RECIPE --write` rewrites it)")


# QEMU CPU models by the ISA oneDNN was capped at: QEMU cannot play AVX-512 without VNNI, so that
# cap's closest emulated stand-in is the other pre-VNNI class, AVX2 (Haswell).
SECOND_ISA_CPUS = {"AVX2": ["Haswell"], "AVX512_CORE": ["Haswell"], "none": []}


def _second_isa(section: Section, value: Any) -> list[str]:
    cpus = SECOND_ISA_CPUS.get(str(value), ["Haswell"])
    notes = []
    if "cpus" in section:
        notes.append(f"verify.second_isa: {value} removed; verify.cpus already set ({list(section['cpus'])}), kept")
    else:
        _insert_beside(section, "second_isa", "cpus", cpus)
        notes.append(f"verify.second_isa: {value} -> verify.cpus: {cpus}"
                     + (" (QEMU emulates no AVX-512 without VNNI: Haswell stands for the pre-VNNI class)"
                        if value == "AVX512_CORE" else ""))
    del section["second_isa"]
    return notes


CHANGES: tuple[KeyChange, ...] = (
    KeyChange(("verify", "second_isa"), "0.1.0 (2026-12-04, issue 19)", "verify.cpus",
              "capping oneDNN's ISA (ONEDNN_MAX_CPU_ISA) is not a sound pre-VNNI emulation on AVX-512 hosts, so int8 "
              "artifacts are checked on emulated CPUs under QEMU instead", _second_isa),
)


def change_at(path: tuple[Any, ...]) -> KeyChange | None:
    """The change that removed the key at `path` (list indexes ignored), if one did."""
    keys = tuple(part for part in path if isinstance(part, str))
    return next((change for change in CHANGES if change.path == keys), None)


@dataclass(frozen=True)
class Migration:
    text: str  # the recipe as it should now read
    notes: list[str]  # one line per key rewritten

    @property
    def changed(self) -> bool:
        return bool(self.notes)


def migrate_text(text: str, where: str = "recipe") -> Migration:
    """The recipe `text` with every removed key rewritten (comments and order kept)."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # `  - item` under its key, as the shipped recipes write lists
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise InputError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}): fix it, then migrate") from exc
    notes: list[str] = []
    for change in CHANGES:
        section = _section(document, change.path[:-1])
        if section is not None and change.path[-1] in section:
            notes += change.rewrite(section, section[change.path[-1]])
    if not notes:
        return Migration(text, [])
    out = io.StringIO()
    yaml.dump(document, out)
    return Migration(out.getvalue(), notes)


def migrate_file(path: Path, write: bool) -> Migration:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the recipe ({exc}): check the path") from exc
    migration = migrate_text(text, str(path))
    if write and migration.changed:
        temporary = path.with_name(f".{path.name}.migrating")
        temporary.write_text(migration.text)
        temporary.replace(path)
    return migration


def _section(document: Any, path: tuple[str, ...]) -> Section | None:
    for key in path:
        if not isinstance(document, dict) or not isinstance(document.get(key), dict):
            return None
        document = document[key]
    return document if isinstance(document, dict) else None


def _insert_beside(section: Section, old: str, new: str, value: Any) -> None:
    """`new: value` where `old` stands (ruamel's mapping keeps positions; a plain dict appends)."""
    if hasattr(section, "insert"):
        section.insert(list(section).index(old), new, value)
    else:
        section[new] = value
