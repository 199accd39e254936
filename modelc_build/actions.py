"""The GitHub Action's script part (`action.yml` runs `python -m modelc_build.actions ...`).

    build     build every recipe the glob names, each in a `::group::`; recipe errors become
              `::error file=…,line=…::` annotations on the recipe line, missed gates on the gate's
              line (or the target's, for a default gate); writes the step outputs (`releases`,
              `report`, `passed`, `upload`: the report folders to upload, pass or fail)
    cache-key the key of modelc's step cache for actions/cache: a digest of every step key the
              recipes' plans compute (no recipe code runs), so a restored cache matches its builds
    comment   the pull-request comment: each built recipe against its last released version, one
              comment per pull request, found by its marker and updated in place

Everything is driven by the `GITHUB_*` variables and files a runner sets, so the same commands
run in a test with those pointed at temporary files.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelc_build.recipe import key_locations

GATE_KEYS = ("min_cosine", "max_abs_error", "max_mean_abs_error", "min_snr_db", "max_metric_drop", "min_metric",
             "min_top5_containment", "min_reference_map50")


def escape(value: str, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (% CR LF, and : , in properties)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if property_value else value


def annotation(kind: str, message: str, file: str | None = None, line: int | None = None, column: int | None = None) -> str:
    where = []
    if file:
        where.append(f"file={escape(file, True)}")
    if line:
        where.append(f"line={line}")
    if column:
        where.append(f"col={column}")
    return f"::{kind} {','.join(where)}::{escape(message)}" if where else f"::{kind}::{escape(message)}"


def set_outputs(values: dict[str, str]) -> None:
    """Write step outputs (multi-line values with a delimiter) to $GITHUB_OUTPUT."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        for name, value in values.items():
            delimiter = f"modelc_{os.urandom(8).hex()}"
            handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


# --- locating what a message is about in the recipe ---------------------------------------------

def gate_location(marks: dict[tuple[Any, ...], tuple[int, int]], recipe: dict[str, Any], target: str,
                  gate: str) -> tuple[int, int] | None:
    """The line of the gate that was missed: gates.<precision>.<gate>, gates.default.<gate>, or —
    for a default gate the recipe does not write — the target's entry."""
    backend, _, precision = target.rpartition("-")
    for section in (precision, "default"):
        if ("gates", section, gate) in marks:
            return marks[("gates", section, gate)]
    for index, entry in enumerate(recipe.get("targets") or []):
        if entry.get("backend") == backend and precision in (entry.get("precisions") or []):
            return marks.get(("targets", index, "backend")) or marks.get(("targets",))
    return marks.get(("targets",))


def missed_gate_annotations(recipe_path: Path, report: dict[str, Any]) -> list[str]:
    import yaml

    data = yaml.safe_load(recipe_path.read_text()) or {}
    marks = key_locations(recipe_path)
    found = []
    for artifact in report.get("artifacts", []):
        checks = [(artifact["target"], g, "") for g in artifact.get("gates") or []]
        checks += [(artifact["target"], g, f" on {m.get('emulate') or m.get('setting')}")
                   for m in artifact.get("measurements") or [] if m.get("gated") for g in m.get("gates") or []]
        for target, gate, where in checks:
            if gate["passed"]:
                continue
            line, column = gate_location(marks, data, target, gate["gate"]) or (None, None)
            output = f" on output '{gate['output']}'" if gate.get("output") else ""
            found.append(annotation("error", f"{target}{where}: {gate['gate']}{output} {gate['observed']} vs threshold "
                                             f"{gate['threshold']} ({gate.get('source', 'recipe')} gate)",
                                    str(recipe_path), line, column))
    return found


def recipe_error_annotations(stderr: str) -> list[str]:
    """`error: FILE:LINE:COL: KEY: MESSAGE` lines (modelc's recipe problems) as annotations; any
    other error line as an annotation without a place."""
    import re

    found = []
    for line in stderr.splitlines():
        if not line.startswith("error: "):
            continue
        text = line[len("error: "):]
        placed = re.match(r"^(?P<file>[^:]+\.ya?ml):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$", text)
        if placed:
            found.append(annotation("error", placed["message"], placed["file"], int(placed["line"]), int(placed["col"])))
        else:
            found.append(annotation("error", text))
    return found


# --- build ----------------------------------------------------------------------------------------

@dataclass
class Built:
    recipe: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    report_folder: str | None = None


def _modelc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelc_build", *args], capture_output=True, text=True)


def build_one(recipe: Path, options: argparse.Namespace, print_line: Any = print) -> Built:
    import yaml

    data = yaml.safe_load(recipe.read_text()) if recipe.is_file() else {}
    name, version = str((data or {}).get("name", "")), str((data or {}).get("version", ""))
    args = ["build", str(recipe), "--store", options.store, "--json", "--reports-dir", options.reports_dir,
            "--cache", options.cache]
    for target in filter(None, (options.targets or "").split(",")):
        args += ["--target", target.strip()]
    if options.push:
        args.append("--push")
    if options.share_steps:
        args.append("--share-steps")
    if options.sign == "sigstore":
        args.append("--sigstore")
    elif options.sign == "key" and not os.environ.get("MODELC_SIGNING_KEY") and options.signing_key:
        args += ["--signing-key", options.signing_key]
    if options.compare:
        args += ["--compare-to", options.compare]
    print_line(f"::group::modelc build {recipe}")
    done = _modelc(*args)
    for line in done.stderr.splitlines():
        if not line.startswith("error: "):
            print_line(line)
    print_line("::endgroup::")
    built = Built(str(recipe), done.returncode)
    if done.returncode == 0 and done.stdout.strip():
        built.summary = json.loads(done.stdout)
        if built.summary.get("released"):
            built.report_folder = _keep_reports(options.store, name, version, Path(options.reports_dir))
    failed_reports = Path(options.reports_dir) / name / version
    if done.returncode != 0 and failed_reports.is_dir():
        built.report_folder = str(failed_reports.resolve())
    for line in recipe_error_annotations(done.stderr):
        if "accuracy gate(s) missed" in line or "already stored" in line:
            continue  # said below, on the gate's line / as the version rule says
        print_line(line)
    if done.returncode == 4 and (failed_reports / "report.json").is_file():
        for line in missed_gate_annotations(recipe, json.loads((failed_reports / "report.json").read_text())):
            print_line(line)
    if done.returncode == 5 and "with different content" in done.stderr:
        # --changed given (empty too): the recipes this push changed; not given: assume this one did
        changed = str(recipe) in set(filter(None, options.changed.split("\n"))) if options.changed not in (None, "-") else True
        line = (f"{name} {version} is already released with other content: the recipe changed without a version "
                "bump; bump version") if changed else (
            f"{name} {version} is already released; this change (to modelc or the models, not the recipe) would give it "
            "other content: bump version in the recipe to release it")
        if changed:
            print_line(annotation("error", line, str(recipe), *(key_locations(recipe).get(("version",)) or (None, None))))
        else:
            print_line(annotation("warning", line, str(recipe)))
            built.exit_code = 0
    return built


def _keep_reports(store_url: str, name: str, version: str, folder: Path) -> str | None:
    """A released version's reports copied beside the failed ones, so that the job uploads them
    pass or fail (a registry keeps no local folder)."""
    import shutil

    from modelc_build.errors import ModelcError
    from modelc_build.manifest import REPORT_FILES
    from modelc_build.stores import open_store

    destination = folder / name / version
    try:
        staging = folder / f".{name}-{version}-reports"
        shutil.rmtree(staging, ignore_errors=True)
        open_store(store_url).fetch(name, version, staging, lambda manifest: set(REPORT_FILES))
        destination.mkdir(parents=True, exist_ok=True)
        for report in REPORT_FILES:
            if (staging / report).is_file():
                shutil.copyfile(staging / report, destination / report)
        shutil.rmtree(staging, ignore_errors=True)
    except (ModelcError, OSError):
        return None
    return str(destination.resolve())


def recipe_files(patterns: str) -> list[Path]:
    """The recipe files the space-separated glob patterns name, each once, in order."""
    return sorted({Path(p) for pattern in patterns.split() for p in glob.glob(pattern)})


def command_build(options: argparse.Namespace) -> int:
    recipes = recipe_files(options.recipes)
    if not recipes:
        print(annotation("error", f"no recipe matches {options.recipes!r}"))
        set_outputs({"releases": "[]", "report": "", "passed": "false", "upload": ""})
        return 3
    results = [build_one(recipe, options) for recipe in recipes]
    releases = [{"recipe": r.recipe, "name": r.summary["name"], "version": r.summary["version"],
                 "store": r.summary["location"], "passed": r.summary["passed"],
                 "manifest_digest": _manifest_digest(r.summary["location"])}
                for r in results if r.summary.get("released")]
    folders = [r.report_folder for r in results if r.report_folder]
    set_outputs({"releases": json.dumps(releases), "report": folders[0] if folders else "",
                 "passed": "true" if all(r.exit_code == 0 for r in results) else "false",
                 "upload": "\n".join(folders)})
    return max((r.exit_code for r in results), default=0)


def _manifest_digest(location: str) -> str | None:
    """sha256 of a local release's manifest.json (a registry location names its own digest)."""
    manifest = Path(location) / "manifest.json"
    if manifest.is_file():
        import hashlib

        return f"sha256:{hashlib.sha256(manifest.read_bytes()).hexdigest()}"
    return None


# --- the step cache key -------------------------------------------------------------------------

def command_cache_key(options: argparse.Namespace) -> int:
    """A key that changes with any step key of the recipes' plans (computed without running recipe
    code; steps only a build can key count by their description)."""
    import hashlib

    from modelc_build.cache import Cache
    from modelc_build.engine import Engine
    from modelc_build.fingerprint import Fingerprints
    from modelc_build.plan import make_plan
    from modelc_build.progress import BuildLog
    from modelc_build.recipe import load_recipe

    digest = hashlib.sha256()
    cache = Cache(Path(options.cache))
    for recipe in recipe_files(options.recipes):
        plan = make_plan(load_recipe(recipe))
        keys = Engine(cache, BuildLog()).step_keys(plan.steps, Fingerprints(cache, run_code=False))
        digest.update(json.dumps(keys, sort_keys=True).encode())
    key = f"modelc-steps-{os.environ.get('RUNNER_OS', 'local')}-{digest.hexdigest()[:32]}"
    set_outputs({"key": key, "restore-keys": f"modelc-steps-{os.environ.get('RUNNER_OS', 'local')}-"})
    print(key)
    return 0


# --- the pull-request comment -----------------------------------------------------------------

def comment_text(store_url: str, releases: list[dict[str, Any]]) -> str:
    """Each built recipe against its last released version in the store."""
    from modelc_build.compare import MARKER, markdown, previous_version, report_of
    from modelc_build.stores import open_store

    store = open_store(store_url)
    parts = [MARKER]
    for release in releases:
        name, version = release["name"], release["version"]
        built_here = Path(str(release.get("store", ""))) / "report.json"  # a dry run's local release
        after = json.loads(built_here.read_text()) if built_here.is_file() else report_of(store, name, version)
        older = previous_version(store, name, version)
        if older is None:
            parts.append(f"### modelc: {name} {version}\n\nNo earlier release of {name} in the store to compare with.\n")
            continue
        parts.append(markdown(report_of(store, name, older), after).replace(MARKER + "\n", ""))
    return "\n".join(parts)


def post_comment(body: str) -> str:
    """Create or update the one modelc comment on the pull request (GitHub's REST API)."""
    import requests

    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    repository = os.environ["GITHUB_REPOSITORY"]
    event = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text())
    number = (event.get("pull_request") or {}).get("number") or event.get("number")
    headers = {"Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}", "Accept": "application/vnd.github+json"}
    listed = requests.get(f"{api}/repos/{repository}/issues/{number}/comments", headers=headers, timeout=30,
                          params={"per_page": 100})
    listed.raise_for_status()
    from modelc_build.compare import MARKER

    mine = next((c for c in listed.json() if MARKER in (c.get("body") or "")), None)
    if mine is not None:
        answer = requests.patch(f"{api}/repos/{repository}/issues/comments/{mine['id']}", headers=headers,
                                json={"body": body}, timeout=30)
    else:
        answer = requests.post(f"{api}/repos/{repository}/issues/{number}/comments", headers=headers,
                               json={"body": body}, timeout=30)
    answer.raise_for_status()
    return "updated" if mine is not None else "created"


def command_comment(options: argparse.Namespace) -> int:
    releases = json.loads(options.releases)
    body = comment_text(options.store, releases)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(body + "\n")
    if options.post:
        print(f"pull-request comment {post_comment(body)}")
    else:
        print(body)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelc_build.actions")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build")
    build.add_argument("--recipes", default="recipes/*.yaml")
    build.add_argument("--targets", default="")
    build.add_argument("--store", default=os.environ.get("MODELC_STORE", "artifacts"))
    build.add_argument("--sign", choices=("none", "key", "sigstore"), default="none")
    build.add_argument("--signing-key", default="")
    build.add_argument("--push", action="store_true")
    build.add_argument("--share-steps", action="store_true")
    build.add_argument("--compare", default="")
    build.add_argument("--changed", default=None, help="recipes this push changed, one per line (empty: none)")
    build.add_argument("--reports-dir", default=".modelc/reports")
    build.add_argument("--cache", default=os.environ.get("MODELC_CACHE", ".modelc/cache"))
    key = commands.add_parser("cache-key")
    key.add_argument("--recipes", default="recipes/*.yaml")
    key.add_argument("--cache", default=os.environ.get("MODELC_CACHE", ".modelc/cache"))
    comment = commands.add_parser("comment")
    comment.add_argument("--store", default=os.environ.get("MODELC_STORE", "artifacts"))
    comment.add_argument("--releases", required=True, help="the build step's `releases` output (JSON)")
    comment.add_argument("--post", action="store_true")
    options = parser.parse_args(argv)
    return {"build": command_build, "cache-key": command_cache_key, "comment": command_comment}[options.command](options)


if __name__ == "__main__":
    sys.exit(main())
