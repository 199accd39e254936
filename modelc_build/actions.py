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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelc_build.api import BuildRequest, BuildResult, build_recipe
from modelc_build.errors import VersionTaken
from modelc_build.recipe import key_locations


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


# --- build ----------------------------------------------------------------------------------------

def build_request(recipe: Path, options: argparse.Namespace) -> BuildRequest:
    """The Action's inputs as the typed request `modelc build` makes from its options."""
    key = Path(options.signing_key) if options.sign == "key" and options.signing_key and not os.environ.get("MODELC_SIGNING_KEY") \
        else None
    return BuildRequest(recipe, store=options.store, cache=Path(options.cache), reports_dir=Path(options.reports_dir),
                        targets=tuple(t.strip() for t in (options.targets or "").split(",") if t.strip()),
                        push=options.push, share_steps=options.share_steps, compare_to=options.compare or None,
                        signing_key=key, sigstore=options.sign == "sigstore")


@dataclass
class Built:
    """One recipe's build as the Action reports it: the result, the exit code it counts as (a
    version already released is a warning where the recipe did not change) and the report folder."""

    result: BuildResult
    exit_code: int
    report_folder: str | None = None


def build_one(recipe: Path, options: argparse.Namespace, print_line: Any = print) -> Built:
    """Build one recipe in this process, its log in a `::group::`; then annotations on the recipe's
    lines for what went wrong."""
    from modelc_build.progress import BuildLog

    print_line(f"::group::modelc build {recipe}")
    sys.stdout.flush()
    result = build_recipe(build_request(recipe, options), BuildLog())
    sys.stderr.flush()
    print_line("::endgroup::")
    built = Built(result, result.exit_code)
    if result.released:  # its reports alone, beside the failed ones, to upload pass or fail
        built.report_folder = _keep_reports(options.store, result.name, result.version, Path(options.reports_dir))
    elif result.report_folder is not None:  # a failed build's kept report
        built.report_folder = str(result.report_folder.resolve())
    for line in problem_annotations(result, options):
        print_line(line)
    if isinstance(result.error, VersionTaken) and not _recipe_changed(recipe, options):
        built.exit_code = 0
    return built


def problem_annotations(result: BuildResult, options: argparse.Namespace) -> list[str]:
    """What went wrong, each on its recipe line where it has one: a recipe's problems, each missed
    gate, a version released already with other content; anything else as a line without a place."""
    error = result.error
    if error is None:
        return []
    if result.problems:
        return [annotation("error", p.message if not p.key_path else f"{p.key_path}: {p.message}", p.file, p.line, p.column)
                for p in result.problems]
    if result.missed_gates:
        return [annotation("error", miss.words(), str(result.recipe), miss.line, miss.column) for miss in result.missed_gates]
    if isinstance(error, VersionTaken):
        where = key_locations(result.recipe).get(("version",)) or (None, None)
        if _recipe_changed(result.recipe, options):
            return [annotation("error", f"{result.name} {result.version} is already released with other content: the "
                                        "recipe changed without a version bump; bump version", str(result.recipe), *where)]
        return [annotation("warning", f"{result.name} {result.version} is already released; this change (to modelc or "
                                      "the models, not the recipe) would give it other content: bump version in the "
                                      "recipe to release it", str(result.recipe))]
    return [annotation("error", error.message)]


def _recipe_changed(recipe: Path, options: argparse.Namespace) -> bool:
    """--changed given (empty too): whether this push changed the recipe; not given: assume it did."""
    if options.changed in (None, "-"):
        return True
    return str(recipe) in set(filter(None, options.changed.split("\n")))


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
    releases = [{"recipe": str(r.result.recipe), "name": r.result.name, "version": r.result.version,
                 "store": r.result.location, "passed": r.result.passed, "manifest_digest": r.result.manifest_digest}
                for r in results if r.result.released]
    folders = [r.report_folder for r in results if r.report_folder]
    set_outputs({"releases": json.dumps(releases), "report": folders[0] if folders else "",
                 "passed": "true" if all(r.exit_code == 0 for r in results) else "false",
                 "upload": "\n".join(folders)})
    write_job_summary([r.result for r in results])
    return max((r.exit_code for r in results), default=0)


def write_job_summary(results: list[BuildResult]) -> None:
    """Each built recipe's report (report.md), passed or failed, as the job's summary."""
    from modelc_build.report import to_markdown

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    with open(summary, "a", encoding="utf-8") as handle:
        for result in results:
            if result.report is not None:
                handle.write(to_markdown(result.report))


# --- the step cache key -------------------------------------------------------------------------

def command_cache_key(options: argparse.Namespace) -> int:
    """A key that changes with any step key of the recipes' plans (computed without running recipe
    code; steps only a build can key count by their description)."""
    import hashlib

    from modelc_build.cache import Cache
    from modelc_build.engine import Engine
    from modelc_build.fingerprint import Fingerprints
    from modelc_build.plan import make_plan, probe_host
    from modelc_build.progress import BuildLog
    from modelc_build.recipe import load_recipe

    digest = hashlib.sha256()
    cache = Cache(Path(options.cache))
    host = probe_host()
    for recipe in recipe_files(options.recipes):
        plan = make_plan(load_recipe(recipe), host)
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
