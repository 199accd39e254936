"""The `modelc` command: parse, call, print, exit code. Thin on purpose."""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from modelc_build import __version__
from modelc_build.errors import ModelcError, RecipeError, RecipeProblem

DEFAULT_STORE = "artifacts"
DEFAULT_CACHE = ".modelc/cache"

cache_option = click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
                            default=lambda: os.environ.get("MODELC_CACHE", DEFAULT_CACHE), show_default=DEFAULT_CACHE,
                            help="Step cache folder (env MODELC_CACHE).")


timeout_option = click.option("--timeout", type=click.FloatRange(1, 86400), default=None,
                              help="Seconds one registry operation (a push, a pull, a listing) may take, every "
                                   "retry included (default 300, or MODELC_REGISTRY_TIMEOUT); then exit code 9.")


def store_options(help: str = "A folder, file:// URL or oci://HOST/REPOSITORY (env MODELC_STORE).") -> Callable[..., Any]:
    """--store (default: artifacts, or MODELC_STORE) and --timeout for its registry operations."""
    store = click.option("--store", "store_url", default=lambda: os.environ.get("MODELC_STORE", DEFAULT_STORE),
                         show_default=DEFAULT_STORE, help=help)
    return lambda function: store(timeout_option(function))


def _stderr(message: str) -> None:
    click.echo(message, err=True)


def use_color() -> bool:
    """NO_COLOR (any value) turns colour off, FORCE_COLOR on; otherwise colour on a terminal only."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stderr.isatty()


def _json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


DEBUG_HELP = "On an error, also print its traceback (the exit code stays the documented one)."
JSON_HELP = ("Print the result as JSON on stdout (schemas: docs/cli-json.md); errors stay one line on stderr with "
             "their exit code.")


@dataclass(frozen=True)
class Globals:
    """--debug and --json given before the command (`modelc --debug build ...`)."""

    debug: bool = False
    as_json: bool = False


def global_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--debug and --json on a command, also accepted before it: every command takes both, in
    either place."""
    @functools.wraps(function)
    def run(*args: Any, debug: bool, as_json: bool, **kwargs: Any) -> Any:
        root = click.get_current_context().find_root().obj or Globals()
        return function(*args, debug=debug or root.debug, as_json=as_json or root.as_json, **kwargs)

    run = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(run)
    return click.option("--debug", is_flag=True, help=DEBUG_HELP)(run)


def _fail(error: ModelcError, debug: bool) -> None:
    if debug:  # the whole story, causes included, and still the documented exit code
        import traceback

        traceback.print_exception(error)
    color = use_color()
    prefix = click.style("error:", fg="red", bold=True) if color else "error:"
    if isinstance(error, RecipeError):
        for problem in error.problems:
            click.echo(f"{prefix} {_capped(str(problem))}", err=True, color=color)
    else:
        click.echo(f"{prefix} {_capped(one_line(error.message))}", err=True, color=color)
    sys.exit(error.exit_code)


def one_line(message: str) -> str:
    """An error as one line: a library's multi-line text joined with '; ' (--debug prints it whole)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines)


MAX_LINE = 1000  # an error is one readable line: a 100 kB value in it is cut, not echoed


def _capped(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + f"… ({len(line) - MAX_LINE} more characters)"


def _guarded(debug: bool, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except ModelcError as error:
        _fail(error, debug)
    except KeyboardInterrupt:
        _stderr("interrupted: nothing was stored")
        sys.exit(130)


class MemorySize(click.ParamType):
    """A memory size: bytes, or a number with K, M, G or T (powers of 1024; KiB, MB and the like
    read the same)."""

    name = "size"
    UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        number, unit = (text[:-1], text[-1]) if text and text[-1] in self.UNITS else (text, "")
        try:
            size = int(float(number) * self.UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a memory size: write e.g. 6G, 3500M or a number of bytes", param, ctx)
        if size <= 0:
            self.fail(f"{value!r}: a memory size is more than zero", param, ctx)
        return size


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelc")
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def main(ctx: click.Context, debug: bool, as_json: bool) -> None:
    """modelc: build, check and store compiled models from a declarative recipe.

    Exit codes: 0 ok, 1 internal error, 2 invalid recipe or usage, 3 unusable input, 4 accuracy
    gate missed, 5 store refused the release, 6 backend unavailable here, 7 export/compile failed,
    8 verification failed (signature, signer, digest or identity; nothing written), 9 network
    failure (registry unreachable or too slow for --timeout), 10 a local folder cannot be written
    (read-only, a file in the way, disk full).
    """
    ctx.obj = Globals(debug, as_json)


def signing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--sigstore", is_flag=True, help="Sign keyless with Sigstore, using the GitHub Actions "
                           "OIDC identity (needs `id-token: write`).")(command)
    command = click.option("--certificate-chain", "certificate_chain", multiple=True, type=click.Path(path_type=Path),
                           help="Sign with a certificate: the signing certificate first, then its chain (repeat).")(command)
    command = click.option("--signing-key", type=click.Path(path_type=Path),
                           help="ECDSA private key (PEM) to sign the release with; or PEM text in MODELC_SIGNING_KEY.")(command)
    return command


def trust_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--sigstore-issuer", default="https://token.actions.githubusercontent.com", show_default=True,
                           help="OIDC issuer of the Sigstore identity.")(command)
    command = click.option("--sigstore-identity", help="Expected Sigstore signer, e.g. the workflow "
                           "https://github.com/ORG/REPO/.github/workflows/build-models.yml@refs/heads/main.")(command)
    command = click.option("--certificate-identity", help="With --certificate-chain: the signer's certificate name "
                           "(CN, e-mail or URI) that must match.")(command)
    command = click.option("--certificate-chain", "certificate_chain", multiple=True, type=click.Path(path_type=Path),
                           help="Verify against this certificate chain (repeat; root last).")(command)
    command = click.option("--public-key", type=click.Path(path_type=Path), help="ECDSA public key (PEM) the release "
                           "must be signed with.")(command)
    return command


def _trust(public_key: Path | None, certificate_chain: tuple[Path, ...], certificate_identity: str | None,
           sigstore_identity: str | None, sigstore_issuer: str) -> Any:
    from modelc_build.signing import Trust

    given = sum(bool(x) for x in (public_key, certificate_chain, sigstore_identity))
    if given != 1:
        raise click.UsageError("give exactly one of --public-key, --certificate-chain (with --certificate-identity) "
                               "or --sigstore-identity (or --unsigned, for a release built without a key)")
    return Trust(public_key, tuple(certificate_chain), certificate_identity, sigstore_identity, sigstore_issuer)


@main.command()
@click.option("--out", "prefix", required=True, type=click.Path(path_type=Path),
              help="Writes PREFIX.key (private, mode 0600) and PREFIX.pub.")
@global_options
def keygen(prefix: Path, debug: bool, as_json: bool) -> None:
    """Write an ECDSA P-256 key pair for signing releases."""
    from modelc_build.signing import write_key_pair

    private, public = _guarded(debug, lambda: write_key_pair(prefix))
    if as_json:
        _json({"private_key": str(private), "public_key": str(public), "algorithm": "ECDSA P-256"})
        return
    click.echo(f"wrote {private} (keep it secret; CI: store its text as a secret and set MODELC_SIGNING_KEY) "
               f"and {public} (give it to deploy stages: modelc pull --public-key {public})")


@main.command()
@click.argument("reference", metavar="NAME:VERSION")
@store_options()
@click.option("--target", help="Only this artifact (e.g. openvino-int8), with the manifest, reports and signature.")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="A new or empty folder.")
@click.option("--gpu", help="Only the TensorRT engines built for this GPU generation (sm89, ada, ...; `auto`: this "
              "machine's GPU, from nvidia-smi), with their stamps, the reports and the golden set.")
@trust_options
@click.option("--check", is_flag=True, help="After verifying, run each pulled artifact on the release's golden set "
              "on this machine with its recorded settings (exit 4 when one misses; the pull stays).")
@global_options
def pull(reference: str, store_url: str, timeout: float | None, target: str | None, dest: Path, gpu: str | None,
         public_key: Path | None,
         certificate_chain: tuple[Path, ...], certificate_identity: str | None, sigstore_identity: str | None,
         sigstore_issuer: str, check: bool, as_json: bool, debug: bool) -> None:
    """Download a release, verify its signature and every digest, then move it into DEST."""
    from modelc_build.deploy import parse_reference
    from modelc_build.deploy import pull as pull_release
    from modelc_build.stores import open_store

    trust = _trust(public_key, certificate_chain, certificate_identity, sigstore_identity, sigstore_issuer)

    def action() -> Any:
        name, version = parse_reference(reference)
        return pull_release(open_store(store_url, timeout), name, version, dest, trust, target, _gpu(gpu))

    pulled = _guarded(debug, action)
    document: dict[str, Any] = {"reference": reference, "destination": str(pulled.destination), "files": pulled.files,
                                "verified_with": trust.describe()}
    if not as_json:
        click.echo(f"verified and wrote {len(pulled.files)} files of {reference} to {pulled.destination} ({trust.describe()})")
    failure = None
    if check:
        document["checks"], failure = _golden_checks(pulled.destination, [target] if target else None, as_json, debug)
    if as_json:
        _json(document)
    if failure is not None:
        _fail(failure, debug)


@main.command()
@click.argument("release", type=click.Path(path_type=Path, exists=True, file_okay=False))
@trust_options
@click.option("--run", "run_golden", is_flag=True, help="Also run each artifact on the release's golden set on this "
              "machine, with the runtime settings the manifest records; exit 4 naming the artifact and the CPU when "
              "one misses the tolerances its gates implied.")
@click.option("--target", "targets", multiple=True, help="With --run: only this artifact (repeat); its runtime must be "
              "installed. Without: every artifact whose runtime is installed.")
@click.option("--expect", "expected", metavar="NAME:VERSION", help="The release the folder must hold: the signed "
              "manifest's name and version are compared with it (exit 8 when they differ).")
@click.option("--unsigned", is_flag=True, help="A release built without a signing key (your own local build): check "
              "every file against the sha256 its manifest lists, and nothing extra, without a signature. It proves the "
              "folder is what its manifest says, not who built it; never use it for a release you pulled.")
@global_options
def verify(release: Path, public_key: Path | None, certificate_chain: tuple[Path, ...], certificate_identity: str | None,
           sigstore_identity: str | None, sigstore_issuer: str, run_golden: bool, targets: tuple[str, ...],
           expected: str | None, unsigned: bool, as_json: bool, debug: bool) -> None:
    """Check a release folder on disk against its signature: every file, nothing extra, the signer;
    with --run, prove its artifacts on this machine."""
    from modelc_build.deploy import parse_reference, verify_folder, verify_unsigned

    identity = _guarded(debug, lambda: parse_reference(expected)) if expected else None
    if unsigned:
        if public_key or certificate_chain or sigstore_identity:
            raise click.UsageError("--unsigned checks a release without a signature: leave out --public-key, "
                                   "--certificate-chain and --sigstore-identity")
        _guarded(debug, lambda: verify_unsigned(release, identity))
        how = "unsigned: the manifest's sha256 list, no signature"
    else:
        trust = _trust(public_key, certificate_chain, certificate_identity, sigstore_identity, sigstore_issuer)
        _guarded(debug, lambda: verify_folder(release, trust, identity=identity))
        how = trust.describe()
    document: dict[str, Any] = {"release": str(release), "verified": True, "verified_with": how}
    if not as_json:
        click.echo(f"{release}: every file matches {'its manifest' if unsigned else 'the signature'} ({how})")
    failure = None
    if run_golden:
        document["checks"], failure = _golden_checks(release, list(targets) or None, as_json, debug)
    if as_json:
        _json(document)
    if failure is not None:
        _fail(failure, debug)


def _gpu(given: str | None) -> str | None:
    """--gpu as a compute capability: a name (ada), an sm number, or `auto` (this machine's GPU)."""
    from modelc_build.errors import BackendUnavailable, InputError
    from modelc_build.gpus import GENERATIONS, canonical, local_gpus

    if given is None:
        return None
    if given == "auto":
        here = local_gpus()
        if not here:
            raise BackendUnavailable("--gpu auto: this machine has no NVIDIA GPU (nvidia-smi finds none): name one, e.g. --gpu sm89")
        return here[0]
    gpu = canonical(given)
    if gpu is None:
        raise InputError(f"--gpu {given}: not a GPU generation modelc knows; give one of {', '.join(GENERATIONS)} "
                         "or a name (turing, a100, ampere, ada, hopper, blackwell, blackwell-rtx)")
    return gpu


def _golden_checks(folder: Path, targets: list[str] | None, as_json: bool,
                   debug: bool) -> tuple[dict[str, Any], ModelcError | None]:
    """Run the golden-set checks and print a line each (unless JSON); returns them and the error to
    exit with: 4 when one misses, 6 when nothing could run here."""
    from modelc_build.errors import BackendUnavailable, GateFailed
    from modelc_build.runtime import check_release

    results, skipped = _guarded(debug, lambda: check_release(folder, targets))
    if not as_json:
        for line in [r.describe() for r in results] + skipped:
            click.echo(line)
    failure: ModelcError | None = None
    failed = [r for r in results if not r.passed]
    if not results:
        failure = BackendUnavailable(f"{folder}: no artifact could run on this machine: " + "; ".join(skipped))
    elif failed:
        failure = GateFailed("; ".join(f"{r.target} misses its golden set on {r.cpu} ({r.cpu_class}): " + "; ".join(r.misses)
                                       for r in failed) + ": it does not compute here what was judged at build time")
    return {"results": [{"target": r.target, "cpu": r.cpu, "class": r.cpu_class, "samples": r.samples, "passed": r.passed,
                         "misses": r.misses, "tolerances": r.tolerances, "runtime": r.runtime,
                         "outputs": [vars(m) for m in r.outputs]} for r in results], "skipped": skipped}, failure


@main.command(name="prepare-cpus")
@global_options
def prepare_cpus(debug: bool, as_json: bool) -> None:
    """Prepare the emulated ARM64 CPUs ahead of a build (the ARM64 root and its aarch64 wheels, once
    per machine and runtime versions); a build prepares them on first use otherwise."""
    from modelc_build import arm64

    if arm64.emulator() is None:
        _fail(arm64.ArmRootUnavailable("no qemu-aarch64 on this machine: apt-get install qemu-user"), debug)
    started = time.monotonic()
    was_ready = arm64.ready()
    folder = _guarded(debug, lambda: arm64.prepare(_stderr))
    views = {cpu: str(arm64.view(cpu)) for cpu in arm64.ARM_CORES}
    seconds = round(time.monotonic() - started, 1)
    if as_json:
        _json({"root": str(folder), "key": arm64.root_key(), "was_ready": was_ready, "seconds": seconds, "cpus": views})
        return
    click.echo(f"ARM64 root {'was ready' if was_ready else f'prepared in {seconds} s'}: {folder} "
               f"(emulated CPUs: {', '.join(arm64.ARM_CORES)})")


@main.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@global_options
def validate(recipes: tuple[Path, ...], as_json: bool, debug: bool) -> None:
    """Check recipes against the schema and cross-field rules; report every problem."""
    from modelc_build.recipe import load_recipe, path_problems, recipe_warnings

    problems = []
    warnings = []
    for path in recipes:
        try:
            load_recipe(path)
            problems += path_problems(path)
            warnings += recipe_warnings(path)
        except RecipeError as error:
            problems += error.problems
        except ModelcError as error:
            _fail(error, debug)
    if as_json:
        def listed(found: list[RecipeProblem]) -> list[dict[str, object]]:
            return [{"file": p.file, "line": p.line, "column": p.column, "key": p.key_path, "message": p.message}
                    for p in found]

        _json({"recipes": [{"path": str(path), "ok": not any(p.file == str(path) for p in problems)} for path in recipes],
               "problems": listed(problems), "warnings": listed(warnings)})
        if problems:
            sys.exit(RecipeError.exit_code)
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if problems:
        _fail(RecipeError(problems), debug)
    for path in recipes:
        click.echo(f"{path}: ok")


@main.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--write", "-w", is_flag=True, help="Rewrite each recipe in place (comments kept) instead of printing it.")
@global_options
def migrate(recipes: tuple[Path, ...], write: bool, as_json: bool, debug: bool) -> None:
    """Rewrite keys older modelc versions took into what replaced them (e.g. verify.second_isa ->
    verify.cpus). Without --write, prints the migrated recipe; each change is listed on stderr."""
    from modelc_build.migrate import migrate_file

    done = [(path, _guarded(debug, functools.partial(migrate_file, path, write))) for path in recipes]
    if as_json:
        _json({"recipes": [{"path": str(path), "changed": m.changed, "notes": m.notes, "written": write and m.changed}
                           for path, m in done]})
        return
    for path, migration in done:
        for note in migration.notes:
            _stderr(f"{path}: {note}")
        if not migration.changed:
            _stderr(f"{path}: nothing to migrate")
        elif write:
            _stderr(f"{path}: rewritten")
        if not write:
            click.echo(migration.text, nl=False)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--matrix", is_flag=True, help="Print a GitHub Actions matrix (JSON) of recipe x target jobs; "
              "RECIPE may be a folder of recipes.")
@cache_option
@global_options
def plan(recipe: Path, as_json: bool, matrix: bool, cache_dir: Path, debug: bool) -> None:
    """Print the steps a build of RECIPE runs, in order, with their dependencies and cache state."""
    from modelc_build.cache import Cache
    from modelc_build.engine import Engine
    from modelc_build.fingerprint import Fingerprints
    from modelc_build.plan import RELEASE_STEP, ci_matrix, critical_path, gpu_engine_verdicts, make_plan, pipeline_jobs, probe_host
    from modelc_build.progress import BuildLog
    from modelc_build.recipe import load_recipe

    if matrix:
        paths = sorted(recipe.glob("*.yaml")) + sorted(recipe.glob("*.yml")) if recipe.is_dir() else [recipe]
        loaded = _guarded(debug, lambda: [(p.as_posix(), load_recipe(p)) for p in paths])
        if not as_json:
            click.echo(json.dumps(ci_matrix(loaded), separators=(",", ":")))
            return
        host = probe_host()
        pipelines = []
        for path, one in loaded:
            jobs = pipeline_jobs(make_plan(one, host), one)
            pipelines.append({"recipe": path, "name": one.name, "version": one.version, "jobs": jobs, **critical_path(jobs)})
        click.echo(json.dumps({"matrix": ci_matrix(loaded), "pipelines": pipelines}, indent=2))
        return
    loaded_recipe = _guarded(debug, lambda: load_recipe(recipe))
    the_plan = make_plan(loaded_recipe, probe_host())
    cache = _guarded(debug, lambda: Cache(Path(cache_dir)))
    # never runs recipe code (factories, data functions): plan and validate run on untrusted pull requests
    status = _guarded(debug, lambda: Engine(cache, BuildLog()).dry_run(the_plan.steps, Fingerprints(cache, run_code=False)))
    rows = [(s.id, s.kind, list(s.needs), s.description, status[s.id]) for s in the_plan.steps]
    rows.append((RELEASE_STEP, "release", [s.id for s in the_plan.steps if s.kind in ("verify", "latency", "worth")],
                 f"apply gates; write manifest and reports; store {the_plan.recipe_name} {the_plan.version}",
                 "runs every build (gates, manifest, store)"))
    engines = gpu_engine_verdicts(loaded_recipe, the_plan.host)
    if as_json:
        click.echo(json.dumps({"name": the_plan.recipe_name, "version": the_plan.version,
                               "steps": [{"id": i, "kind": k, "depends_on": d, "description": text, "status": state}
                                         for i, k, d, text, state in rows], "gpu_engines": engines}, indent=2))
        return
    click.echo(f"{the_plan.recipe_name} {the_plan.version}")
    for step_id, _, needs, text, state in rows:
        after = f" (after {', '.join(needs)})" if needs else ""
        click.echo(f"  {step_id:<26} [{state}] {text}{after}")
    if engines:
        from modelc_build.gpus import TABLE_SOURCE

        click.echo(f"GPU engines (precisions per flavour and generation: {TABLE_SOURCE}):")
        for row in engines:
            runs = "runs it" if row["runs"] else f"does NOT run it: {row['why_not']}"
            here = ("built here" if row["built_here"] else f"not built here: {row['build_problem']}")
            ran = "run here" if row["run_here"] else "not run here (no such GPU): built, not run"
            click.echo(f"  {row['target']} {row['gpu']:<6} {row['flavour']}: {runs}; {here}; {ran}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@store_options("Where releases go: a folder, file:// URL or oci://HOST/REPOSITORY (env MODELC_STORE).")
@click.option("--reports-dir", type=click.Path(path_type=Path), default=Path(".modelc/failed"), show_default=True,
              help="Where the report of a build that missed a gate is kept.")
@cache_option
@click.option("--force", is_flag=True, help="Run every step again, ignoring cached results.")
@click.option("--target", "targets", multiple=True, help="Build only this target's steps (e.g. openvino-fp16); "
              "repeatable; no verification or release. For fanned-out CI jobs.")
@click.option("--stage", type=click.Choice(["prepare", "target", "release"]), help="One job of a fanned-out pipeline: "
              "prepare (export, simplify, decoding, reference, golden set, shared graphs), target (with --target: its "
              "compile, verification natively and on emulated CPUs, latency) or release (gates, report, signature, "
              "store, from cached steps only). A step another job makes must be in the step cache (--share-steps): "
              "it is never recomputed (exit 3 naming it).")
@click.option("--job-records", "job_records", type=click.Path(path_type=Path), help="With --stage: a folder of the "
              "pipeline's job records. Read: the keys earlier jobs filed their steps under (a job with other extras "
              "installed could not compute them) and, for release, the CPU the target jobs measured on; written: this "
              "job's record.")
@click.option("--expect-class", "expect_class", metavar="CLASS", help="The CPU class this job was routed to (amx, "
              "avx512-vnni, avx-vnni, avx512, avx2): a runner of another class fails the job in one line (exit 6).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 1, show_default="CPU count",
              help="Independent steps run side by side, up to this many.")
@click.option("--max-memory", "max_memory", type=MemorySize(), envvar="MODELC_MAX_MEMORY", metavar="SIZE",
              help="Memory the build may hold at once (e.g. 6G, 3500M; env MODELC_MAX_MEMORY): a step starts beside "
              "others only when all of them are expected to fit. Default: what the machine has available.")
@click.option("--share-steps", is_flag=True, help="Pull and push step outputs through the store's step cache, "
              "so jobs of one fanned-out build reuse each other's work.")
@click.option("--push", is_flag=True, help="Publish to a registry store (oci://); the release must be signed.")
@click.option("--compare-to", "compare_to", metavar="latest|VERSION", help="After the build, compare the release with "
              "another version of it in the store (latest: the newest older one): accuracy, latency and size per "
              "artifact, printed as a table (and under `comparison` with --json).")
@click.option("--require-cpus", is_flag=True, help="An emulated CPU check that cannot run (no qemu-x86_64) fails the "
              "artifact instead of a warning (verify.require_cpus; the GitHub Action sets it).")
@click.option("--skip-unavailable", is_flag=True, help="Leave out TensorRT engines this machine cannot build (a GPU "
              "generation TensorRT for RTX does not target, without that GPU here) instead of failing; the report "
              "lists what was left out.")
@signing_options
@click.option("-q", "--quiet", is_flag=True, help="No step lines: warnings, errors and the result only.")
@click.option("-v", "--verbose", is_flag=True, help="One plain line per event, also on a terminal (no live lines).")
@global_options
def build(recipe: Path, store_url: str, timeout: float | None, reports_dir: Path, cache_dir: Path, force: bool, targets: tuple[str, ...],
          stage: str | None, job_records: Path | None, expect_class: str | None, share_steps: bool, jobs: int,
          max_memory: int | None, push: bool, compare_to: str | None, require_cpus: bool, skip_unavailable: bool, signing_key: Path | None,
          certificate_chain: tuple[Path, ...], sigstore: bool, quiet: bool, verbose: bool, as_json: bool, debug: bool) -> None:
    """Build every target of RECIPE, check accuracy, sign (when a key is given) and store the release."""
    from modelc_build.api import BuildRequest, Outcome, build_recipe
    from modelc_build.progress import build_log

    request = BuildRequest(recipe, store=store_url, cache=Path(cache_dir), reports_dir=reports_dir, timeout=timeout, force=force,
                           targets=targets, stage=stage, job_records=job_records, expect_class=expect_class, jobs=jobs,
                           max_memory=max_memory,
                           share_steps=share_steps, push=push,
                           compare_to=compare_to, skip_unavailable=skip_unavailable, signing_key=signing_key,
                           certificate_chain=certificate_chain, sigstore=sigstore, require_cpus=require_cpus)
    log = build_log(quiet=quiet, plain=verbose or debug)
    try:
        result = _guarded(debug, lambda: build_recipe(request, log))
    finally:
        log.close()
    if result.error is not None:
        _fail(result.error, debug)
    if as_json:
        _json(_build_summary(result))
        return
    if result.outcome is Outcome.TARGETS_BUILT:
        return
    click.echo({Outcome.RELEASED: f"stored {result.name} {result.version} at {result.location}",
                Outcome.UP_TO_DATE: f"{result.name} {result.version} is up to date at {result.location}: every step cached, "
                                    "nothing to do",
                Outcome.IDENTICAL: f"{result.name} {result.version} is already stored with identical content at "
                                   f"{result.location}: nothing to do"}[result.outcome])
    if result.comparison is not None:
        click.echo(result.comparison.markdown or result.comparison.note)


@main.command()
@click.argument("older", metavar="NAME:VERSION")
@click.argument("newer", metavar="NAME:VERSION")
@store_options()
@global_options
def diff(older: str, newer: str, store_url: str, timeout: float | None, debug: bool, as_json: bool) -> None:
    """Compare two stored releases: per artifact, task metric, lowest output cosine, p50 latency and
    size, with the change and whether it is for the worse or beyond a gate."""
    from modelc_build.compare import changes, markdown, report_of
    from modelc_build.deploy import parse_reference
    from modelc_build.stores import open_store

    def action() -> tuple[dict[str, Any], dict[str, Any]]:
        store = open_store(store_url, timeout)
        return report_of(store, *parse_reference(older)), report_of(store, *parse_reference(newer))

    before, after = _guarded(debug, action)
    if as_json:
        _json({"older": older, "newer": newer, "changes": [c.to_json() for c in changes(before, after)]})
        return
    click.echo(markdown(before, after))


def _build_summary(result: Any) -> dict[str, Any]:
    """`modelc build --json` (docs/cli-json.md)."""
    comparison = {"comparison": result.comparison.to_json()} if result.comparison is not None else {}
    if not result.released:
        return {"targets_built": list(result.targets), "released": False}
    report = result.report
    return {"name": result.name, "version": result.version, "location": result.location,
            "created": result.created, "passed": report.passed,
            "steps_run": result.steps_run, "steps_cached": result.steps_cached, "flags": report.flags(), "released": True,
            "artifacts": [{"target": a.target, "passed": a.passed, "latency_ms": a.latency_ms,
                           "cosine": min((m.cosine for m in a.evaluation.outputs), default=None),
                           "task_metric": None if a.evaluation.task is None else
                           {"name": a.evaluation.task.name, "value": a.evaluation.task.value}} for a in report.artifacts],
            **comparison}


@main.group()
def cache() -> None:
    """Inspect and clean the step cache."""


@cache.command(name="ls")
@cache_option
@global_options
def cache_ls(cache_dir: Path, debug: bool, as_json: bool) -> None:
    """List cache entries: key, step, size, age."""
    import time

    from modelc_build.cache import Cache

    entries = _guarded(debug, lambda: Cache(Path(cache_dir)).entries())
    if as_json:
        _json({"cache": str(cache_dir), "entries": [{"key": e.key, "step": e.step, "size": e.size, "created": e.created}
                                                    for e in sorted(entries, key=lambda e: e.created)],
               "size": sum(e.size for e in entries)})
        return
    for entry in sorted(entries, key=lambda e: e.created):
        age_h = (time.time() - entry.created) / 3600
        click.echo(f"{entry.key[:12]}  {entry.step:<28} {_size(entry.size):>10}  {age_h:7.1f} h")
    click.echo(f"{len(entries)} entries, {_size(sum(e.size for e in entries))} in {cache_dir}")


@cache.command(name="gc")
@click.option("--keep-days", type=float, required=True, help="Remove entries created more than this many days ago.")
@cache_option
@global_options
def cache_gc(keep_days: float, cache_dir: Path, debug: bool, as_json: bool) -> None:
    """Remove old cache entries."""
    from modelc_build.cache import Cache

    removed, freed = _guarded(debug, lambda: Cache(Path(cache_dir)).gc(keep_days))
    if as_json:
        _json({"removed": removed, "freed": freed})
        return
    click.echo(f"removed {removed} entries, freed {_size(freed)}")


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


@main.command(name="ls")
@click.argument("name", required=False)
@store_options()
@global_options
def list_releases(name: str | None, store_url: str, timeout: float | None, as_json: bool, debug: bool) -> None:
    """List stored releases (NAME VERSION per line)."""
    from modelc_build.stores import open_store

    releases = _guarded(debug, lambda: open_store(store_url, timeout).list(name))
    if as_json:
        _json([{"name": release, "version": version} for release, version in releases])
        return
    for release, version in releases:
        click.echo(f"{release} {version}")


if __name__ == "__main__":
    main()
