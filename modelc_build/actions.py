"""The GitHub Action's script part (`action.yml` and the workflows run `python -m modelc_build.actions ...`).

    plan      which recipes a run builds (a pull request: the recipes it changes, all of them when
              modelc, the models or the data change; a push: the recipes it changes and every recipe
              whose version the store lacks, so a cancelled run's work is not lost; a dispatch: all),
              validated with annotations on the recipe lines; the matrix of their target jobs
    build     build every recipe the glob names, in this process (modelc_build.api), each in a
              `::group::`; annotations on recipe lines for recipe errors and missed gates, warnings
              for what the report flags; step outputs `results` (every recipe, failed ones too),
              `releases`, `manifest-digest`, `report`, `passed`, `upload`; the job summary
    cache-key the key of modelc's step cache for actions/cache: a digest of the step keys this job
              computes (its targets' steps, or the whole plan), so each job's cache holds its own work
    comment   the pull-request comment (modelc_build/github.py): failures first, then each built
              recipe against its last released version; one comment, found by marker and author

Everything is driven by the `GITHUB_*` variables and files a runner sets, so the same commands
run in a test with those pointed at temporary files, and under a workflow runner (act) in CI.
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

from modelc_build.api import BuildRequest, BuildResult, build_recipe
from modelc_build.errors import ModelcError, RecipeError, VersionTaken
from modelc_build.recipe import key_locations

# Changes to these rebuild every recipe on a pull request (its tests are the builds)
EVERYTHING = ("modelc_build", "models", "calibration", "pyproject.toml", "action.yml")


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


def write_summary(text: str) -> None:
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")


def recipe_files(patterns: str) -> list[Path]:
    """The recipe files the space-separated glob patterns name, each once, in order."""
    return sorted({Path(p) for pattern in patterns.split() for p in glob.glob(pattern)})


# --- plan -----------------------------------------------------------------------------------------

def changed_files(base: str | None) -> list[str] | None:
    """Files changed (added or modified; deleted ones are gone) between `base` and HEAD; None when
    there is no base to compare with (a first push, a base outside this clone)."""
    if not base or set(base) == {"0"}:
        return None
    known = subprocess.run(["git", "cat-file", "-e", f"{base}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        return None
    listed = subprocess.run(["git", "diff", "--name-only", "--diff-filter=d", base, "HEAD"], capture_output=True, text=True,
                            check=True).stdout
    return [line for line in listed.splitlines() if line]


def chosen_recipes(event: str, recipes: list[Path], changed: list[str] | None, lacking: list[Path]) -> list[Path]:
    """A pull request builds what it changes (everything when modelc, the models or the data
    change); a push releases what it changes and what the store lacks; anything else builds all."""
    if changed is None or event not in ("pull_request", "push"):
        return recipes
    touched = [r for r in recipes if r.as_posix() in changed]
    if event == "pull_request":
        everything = any(f == top or f.startswith(top + "/") for f in changed for top in EVERYTHING)
        return recipes if everything else touched
    return sorted(set(touched) | set(lacking))


def store_lacks(store_url: str, recipes: list[tuple[Path, Any]]) -> list[Path]:
    """The recipes whose name and version the store does not hold (raises the store's error)."""
    from modelc_build.stores import open_store

    store = open_store(store_url)
    return [path for path, recipe in recipes if store.release_digest(recipe.name, recipe.version) is None]


@dataclass(frozen=True)
class Routes:
    """Which runner label a job goes to: the one of `cpu_class` in `runners` (a CPU class -> label
    mapping: hosted or self-hosted runners, Actions Runner Controller scale sets), else
    ubuntu-latest (whatever CPU the pool hands out; the report says which class it was); a GPU job
    to the label of its generation in `runners` (`gpu-sm90`), else `gpu_runner`. A job routed to a
    CPU class passes it as --expect-class and fails on another."""

    cpu_class: str = ""
    runners: dict[str, str] = field(default_factory=dict)
    gpu_runner: str = ""

    @classmethod
    def of(cls, options: argparse.Namespace) -> Routes:
        runners = json.loads(options.runners) if options.runners.strip() else {}
        if not isinstance(runners, dict):
            raise SystemExit(f"error: vars.MODELC_RUNNERS is not a JSON object of CPU class -> runner label: {options.runners!r}")
        return cls(options.cpu_class.strip(), {str(k): str(v) for k, v in runners.items()}, options.gpu_runner.strip())

    def label(self, gpu: bool, generations: tuple[str, ...] = ()) -> tuple[str, str]:
        if gpu:
            by_generation = next((self.runners[f"gpu-{g}"] for g in generations if f"gpu-{g}" in self.runners), None)
            return by_generation or self.gpu_runner or "ubuntu-latest", ""
        if self.cpu_class and self.cpu_class in self.runners:
            return self.runners[self.cpu_class], self.cpu_class
        return "ubuntu-latest", ""


def command_plan(options: argparse.Namespace) -> int:
    from modelc_build.plan import ci_matrix, job_extras, needs_gpu_runner
    from modelc_build.recipe import load_recipe, path_problems

    recipes = recipe_files(options.recipes)
    loaded, failed = [], 0
    for path in recipes:
        try:
            loaded.append((path, load_recipe(path)))
        except RecipeError as error:
            failed += 1
            for problem in error.problems:
                print(annotation("error", f"{problem.key_path}: {problem.message}" if problem.key_path else problem.message,
                                 problem.file, problem.line, problem.column))
    lacking: list[Path] = []
    if options.event == "push":
        try:
            lacking = store_lacks(options.store, loaded)
        except ModelcError as error:
            print(annotation("error", f"the store {options.store} could not be read to plan this release: {error.message}"))
            return error.exit_code
    chosen = chosen_recipes(options.event, recipes, changed_files(options.base), lacking)
    ready = []
    for path, recipe in loaded:
        if path not in chosen:
            continue
        missing = path_problems(path)
        if missing:
            print(annotation("warning", f"{recipe.name} is not built: its inputs are missing ({missing[0].message}); make "
                                        "them in a prepare step (the workflow's `prepare` input, vars.MODELC_PREPARE)",
                             str(path), missing[0].line, missing[0].column))
            continue
        ready.append((path.as_posix(), recipe))
    matrix = ci_matrix(ready)
    routes = Routes.of(options)
    by_path = dict(ready)
    for job in matrix["include"]:
        recipe = by_path[job["recipe"]]
        job["extras"] = ",".join(job_extras(recipe, f"target {job['target']}"))
        target = next(t for t in recipe.targets if t.id == job["target"])
        job["label"], job["class"] = routes.label(job["runner"] == "gpu", target.gpus)
    listed = []
    for recipe_path, recipe in ready:
        gpu = any(needs_gpu_runner(t) for t in recipe.targets)
        label, cpu_class = routes.label(gpu, tuple(g for t in recipe.targets if needs_gpu_runner(t) for g in t.gpus))
        listed.append({"recipe": recipe_path, "name": recipe.name, "version": recipe.version, "runner": "gpu" if gpu else "cpu",
                       "label": label, "class": cpu_class, "prepare_extras": ",".join(job_extras(recipe, "prepare")),
                       "release_extras": ",".join(job_extras(recipe, "release"))})
    set_outputs({"targets": json.dumps(matrix), "recipes": json.dumps(listed), "any": "true" if listed else "false",
                 "changed": "\n".join(p for p in (changed_files(options.base) or []) if p.startswith("recipes/"))})
    names = ", ".join(f"{r['name']} {r['version']}" for r in listed) or "nothing"
    print(f"plan ({options.event}): {names}; {len(matrix['include'])} target job(s)")
    write_summary(f"### modelc plan ({options.event})\n\n" + ("\n".join(f"- `{r['recipe']}`: {r['name']} {r['version']}"
                                                                         for r in listed) or "Nothing to build.") + "\n")
    return 2 if failed else 0


# --- build ----------------------------------------------------------------------------------------

def build_request(recipe: Path, options: argparse.Namespace) -> BuildRequest:
    """The Action's inputs as the typed request `modelc build` makes from its options."""
    key = Path(options.signing_key) if options.sign == "key" and options.signing_key and not os.environ.get("MODELC_SIGNING_KEY") \
        else None
    return BuildRequest(recipe, store=options.store, cache=Path(options.cache), reports_dir=Path(options.reports_dir),
                        targets=targets_of(options), push=options.push, share_steps=options.share_steps,
                        compare_to=options.compare or None, signing_key=key, sigstore=options.sign == "sigstore",
                        require_cpus=options.require_cpus, stage=options.stage or None,
                        expect_class=options.expect_class or None,
                        job_records=Path(options.job_records) if options.job_records and options.stage else None)


def targets_of(options: argparse.Namespace) -> tuple[str, ...]:
    return tuple(t.strip() for t in (options.targets or "").split(",") if t.strip())


@dataclass
class Built:
    """One recipe's build as the Action reports it: the result, the exit code it counts as (a
    version already released is a warning where the recipe did not change) and the report folder."""

    result: BuildResult
    exit_code: int
    report_folder: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One entry of the `results` output (the pull-request comment reads it)."""
        result = self.result
        return {"recipe": str(result.recipe), "name": result.name, "version": result.version, "passed": self.exit_code == 0,
                "outcome": result.outcome.value, "exit_code": self.exit_code,
                "error": None if result.error is None else result.error.message.splitlines()[0][:500],
                "missed_gates": [vars(miss) for miss in result.missed_gates], "report": self.report_folder,
                "store": result.location, "manifest_digest": result.manifest_digest}


def build_one(recipe: Path, options: argparse.Namespace, print_line: Any = print) -> Built:
    """Build one recipe in this process, its log in a `::group::`; then annotations on the recipe's
    lines for what went wrong, and warnings for what its report flags."""
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
    for flag in result.report.flags() if result.report is not None else []:
        print_line(annotation("warning", f"{result.name} {result.version}: {flag}", str(recipe)))
    if isinstance(result.error, VersionTaken) and not _recipe_changed(recipe, options):
        built.exit_code = 0
    return built


def problem_annotations(result: BuildResult, options: argparse.Namespace) -> list[str]:
    """What went wrong, each on its recipe line where it has one: a recipe's problems, each missed
    gate (one line per artifact, gate and setting, with its worst output), a version released
    already with other content; anything else as a line without a place."""
    error = result.error
    if error is None:
        return []
    if result.problems:
        return [annotation("error", p.message if not p.key_path else f"{p.key_path}: {p.message}", p.file, p.line, p.column)
                for p in result.problems]
    if result.missed_gates:
        grouped: dict[tuple[str, str | None, str], list[Any]] = {}
        for miss in result.missed_gates:
            grouped.setdefault((miss.target, miss.setting, miss.gate), []).append(miss)
        lines = []
        for (target, setting, gate), misses in grouped.items():
            lower = gate.startswith("max_")
            worst = max(misses, key=lambda m: m.observed if lower else -m.observed) if all(
                isinstance(m.observed, (int, float)) for m in misses) else misses[0]
            outputs = f" (worst of {len(misses)} outputs: '{worst.output}')" if len(misses) > 1 else (
                f" on output '{worst.output}'" if worst.output else "")
            where = f" on {setting}" if setting else ""
            lines.append(annotation("error", f"{target}{where}: {gate} {_short(worst.observed)} "
                                             f"{'>' if lower else '<'} {_short(worst.threshold)}{outputs} "
                                             f"({worst.source} gate)", str(result.recipe), worst.line, worst.column))
        return lines
    if isinstance(error, VersionTaken):
        line = key_locations(result.recipe).get(("version",)) or (None, None)
        if _recipe_changed(result.recipe, options):
            return [annotation("error", f"{result.name} {result.version} is already released with other content: the "
                                        "recipe changed without a version bump; bump version", str(result.recipe), *line)]
        return [annotation("warning", f"{result.name} {result.version} is already released; this change (to modelc or "
                                      "the models, not the recipe) would give it other content: bump version in the "
                                      "recipe to release it", str(result.recipe))]
    return [annotation("error", f"{result.recipe}: {error.message}")]


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


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


def command_build(options: argparse.Namespace) -> int:
    recipes = recipe_files(options.recipes)
    if not recipes:
        print(annotation("error", f"no recipe matches {options.recipes!r}"))
        set_outputs({"results": "[]", "releases": "[]", "report": "", "passed": "false", "upload": "", "manifest-digest": ""})
        return 3
    built = [build_one(recipe, options) for recipe in recipes]
    releases = [{"recipe": str(b.result.recipe), "name": b.result.name, "version": b.result.version,
                 "store": b.result.location, "passed": b.result.passed, "manifest_digest": b.result.manifest_digest}
                for b in built if b.result.released]
    folders = [b.report_folder for b in built if b.report_folder]
    digests = [str(b.result.manifest_digest) for b in built if b.result.released and b.result.manifest_digest]
    set_outputs({"results": json.dumps([b.to_json() for b in built]), "releases": json.dumps(releases),
                 "report": folders[0] if folders else "", "passed": "true" if all(b.exit_code == 0 for b in built) else "false",
                 "upload": "\n".join(folders), "manifest-digest": digests[0] if len(digests) == 1 else ""})
    write_summary("\n".join(job_summary(b, options) for b in built))
    return max((b.exit_code for b in built), default=0)


def job_summary(built: Built, options: argparse.Namespace) -> str:
    """The verdict and the comparison first; the full report folded below."""
    from modelc_build.api import Outcome
    from modelc_build.report import to_markdown

    result = built.result
    title = f"## modelc: {result.name or result.recipe} {result.version}".rstrip()
    try:
        costs = job_costs(result, options)
    except (ModelcError, ImportError, OSError) as error:  # a nicety of the summary never fails the job
        costs = f"(expected costs not computed here: {error})\n"
    if result.outcome is Outcome.TARGETS_BUILT:
        what = (f"the {options.stage} job" if options.stage == "prepare" else f"{', '.join(result.targets)}")
        return (f"{title}\n\n✅ built {what} ({result.steps_run} step(s) run, {result.steps_cached} cached): released by the "
                f"release job\n\n{costs}")
    if result.error is None:
        verdict = {Outcome.RELEASED: f"✅ released at {result.location}", Outcome.IDENTICAL: "✅ already released (same content)",
                   Outcome.UP_TO_DATE: "✅ up to date"}.get(result.outcome, "✅")
    else:  # a version released already counts as a warning where only modelc or the models changed
        verdict = f"{'⚠️' if built.exit_code == 0 else '❌'} {result.error.message.splitlines()[0]}"
    parts = [title, "", verdict, "", costs] if costs else [title, "", verdict, ""]
    if result.comparison is not None:
        parts += [result.comparison.markdown or result.comparison.note or "", ""]
    if result.report is not None:
        parts += ["<details><summary>Full report</summary>", "", to_markdown(result.report), "</details>", ""]
    return "\n".join(parts)


def job_costs(result: BuildResult, options: argparse.Namespace) -> str:
    """A pipeline job's expected cost (the plan's step hints) beside what it measured, as a table;
    '' outside a fanned-out pipeline or where the recipe cannot be planned here."""
    if not options.stage or result.error is not None:
        return ""
    from modelc_build.plan import make_plan, pipeline_jobs, probe_host
    from modelc_build.recipe import load_recipe

    try:
        recipe = load_recipe(result.recipe)
    except ModelcError:
        return ""
    name = options.stage if options.stage != "target" else f"target {','.join(targets_of(options))}"
    job = next((j for j in pipeline_jobs(make_plan(recipe, probe_host()), recipe) if j["job"] == name), None)
    if job is None:
        return ""
    peak = f"{result.peak_mib:.0f}" if result.peak_mib is not None else "—"
    expected_peak = f"{job['expected_peak_mib']:.0f}" if job["expected_peak_mib"] is not None else "—"
    return ("| job | step-seconds expected (hints) | measured | peak MiB above a worker (hints) | measured peak MiB |\n"
            "|---|---:|---:|---:|---:|\n"
            f"| {name} | {job['expected_step_seconds']:.1f} | {result.step_seconds:.1f} | {expected_peak} | {peak} |\n")


# --- the step cache key -------------------------------------------------------------------------

def command_cache_key(options: argparse.Namespace) -> int:
    """A key of this job's own work: a digest of the step keys it computes (its targets' steps
    with --targets, else every step of the recipes' plans), without running recipe code (a step
    only a build can key counts by its description). Jobs of one run that build different targets
    get different keys, so none freezes the cache of another's work; restore-keys fall back to this
    job's kind, then to any modelc cache."""
    import hashlib

    from modelc_build.cache import Cache
    from modelc_build.engine import Engine
    from modelc_build.fingerprint import Fingerprints
    from modelc_build.plan import make_plan, probe_host, target_step_ids
    from modelc_build.progress import BuildLog
    from modelc_build.recipe import load_recipe

    digest = hashlib.sha256()
    cache = Cache(Path(options.cache))
    host = probe_host()
    targets = targets_of(options)
    for recipe_path in recipe_files(options.recipes):
        recipe = load_recipe(recipe_path)
        plan = make_plan(recipe, host)
        steps = plan.only(target_step_ids(recipe, targets)) if targets else plan.steps
        keys = Engine(cache, BuildLog()).step_keys(steps, Fingerprints(cache, run_code=False))
        digest.update(json.dumps(keys, sort_keys=True).encode())
    kind = "-".join(sorted(targets)) if targets else "full"
    prefix = f"modelc-steps-{os.environ.get('RUNNER_OS', 'local')}-"
    key = f"{prefix}{kind}-{digest.hexdigest()[:32]}"
    set_outputs({"key": key, "restore-keys": f"{prefix}{kind}-\n{prefix}"})
    print(key)
    return 0


# --- the pull-request comment -----------------------------------------------------------------

def command_comment(options: argparse.Namespace) -> int:
    """The comment for the build step's `results`: posted (created or updated) with --post; where
    GitHub refuses it (a fork's read-only token) it goes to the job summary with a warning. Store
    errors met while comparing are errors of this step."""
    from modelc_build.github import CommentRefused, PullRequest, comment_body

    results = json.loads(options.results or "[]")
    body, store_errors = comment_body(results, options.store)
    for error in store_errors:
        print(annotation("error", error))
    if not options.post:
        print(body)
        return 5 if store_errors else 0
    try:
        print(f"pull-request comment {PullRequest.from_environment(options.author).post(body)}")
    except CommentRefused as refused:
        print(annotation("warning", f"{refused.message}: the comment is in this job's summary instead"))
        write_summary(body)
    except ModelcError as error:
        print(annotation("error", error.message))
        write_summary(body)
        return error.exit_code
    return 5 if store_errors else 0


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
    build.add_argument("--require-cpus", action=argparse.BooleanOptionalAction, default=True,
                       help="an emulated CPU check that cannot run fails the artifact (default in CI)")
    build.add_argument("--cache", default=os.environ.get("MODELC_CACHE", ".modelc/cache"))
    build.add_argument("--stage", default="", choices=("", "prepare", "target", "release"),
                       help="one job of a fanned-out pipeline (modelc build --stage)")
    build.add_argument("--expect-class", default="", help="the CPU class this job was routed to")
    build.add_argument("--job-records", default="", help="with --stage: the folder of the pipeline's job records (earlier "
                       "jobs' step keys and CPU read, this job's written)")
    key = commands.add_parser("cache-key")
    key.add_argument("--recipes", default="recipes/*.yaml")
    key.add_argument("--targets", default="")
    key.add_argument("--cache", default=os.environ.get("MODELC_CACHE", ".modelc/cache"))
    plan = commands.add_parser("plan")
    plan.add_argument("--recipes", default="recipes/*.yaml")
    plan.add_argument("--event", default=os.environ.get("GITHUB_EVENT_NAME", "workflow_dispatch"))
    plan.add_argument("--base", default="", help="the commit to diff against: the pull request's base, or the push's before")
    plan.add_argument("--store", default=os.environ.get("MODELC_STORE", "artifacts"))
    plan.add_argument("--cpu-class", default=os.environ.get("MODELC_CPU_CLASS", ""),
                      help="the CPU class every CPU job runs on (vars.MODELC_CPU_CLASS)")
    plan.add_argument("--runners", default=os.environ.get("MODELC_RUNNERS", ""),
                      help='runner labels per CPU class and GPU generation, JSON (vars.MODELC_RUNNERS), e.g. '
                           '{"avx512-vnni": "vnni-runners", "gpu-sm90": "h100-runners"}')
    plan.add_argument("--gpu-runner", default=os.environ.get("MODELC_GPU_RUNNER", ""), help="the GPU jobs' runner label")
    comment = commands.add_parser("comment")
    comment.add_argument("--store", default=os.environ.get("MODELC_STORE", "artifacts"))
    comment.add_argument("--results", default="", help="the build step's `results` output (JSON)")
    comment.add_argument("--author", default="github-actions[bot]", help="who wrote the comment to update")
    comment.add_argument("--post", action="store_true")
    options = parser.parse_args(argv)
    commands_by_name = {"build": command_build, "cache-key": command_cache_key, "comment": command_comment,
                        "plan": command_plan}
    return commands_by_name[options.command](options)


if __name__ == "__main__":
    sys.exit(main())
