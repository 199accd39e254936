"""The workflows run by a workflow runner: act (../shared/act/run.sh) plays the scenarios a team
lives through on `.github/workflows/model-build.yml` and the composite action, with a real OCI
registry (docker-registry on 127.0.0.1) as the store, a signing key from a secret, and a stand-in
of GitHub's REST API for the pull-request comment.

The scenarios run in a clone of this checkout's HEAD (commit first) whose recipes are cut to the
small classifier (so the clone's first push is also a push that deletes recipes):

  push        a push to main: plan (the deleted recipes are not an error), a prepare job, one job
              per target, the release from cached steps only (no step key runs in two jobs), signed
              with the key, pushed to the registry, then the deploy check pulls, verifies and proves it
  dispatch    a workflow_dispatch of every recipe, run again: every job restores its step cache
              (an exact hit, nothing saved again); the release is a no-op (identical content)
  pr-change   a pull request that changes the recipe: the comment compares it with 1.0.0 in the
              registry
  pr-gate     a pull request whose gate fails: the job is red, the missed gate is annotated on its
              recipe line, the comment lists it first, the report is uploaded
  wrong-class a dispatch routed to a CPU class this machine is not: the first job fails in one line

    python .ci/workflows.py [SCENARIO ...]     # all by default; exit 1 when one fails

Environment: MODELC_ACT_RUN (default ../shared/act/run.sh beside this checkout; absent: a warning,
or a failure with MODELC_ACT_REQUIRED=1), KEEP=1 keeps the work folder. Each scenario prints its jobs, their results and its wall time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RUN_SH = Path(os.environ.get("MODELC_ACT_RUN", REPO.parent / "shared" / "act" / "run.sh"))
WORKFLOW = ".github/workflows/model-build.yml"
OWNER_REPO = "modelc-dev/modelc-build"
RECIPE = "recipes/classifier.yaml"


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=check)


class Bench:
    """The clone, the registry, the key and act's state of one set of scenarios."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.repo = work / "repo"
        self.state = work / "act-state"
        self.failures: list[str] = []
        sys.path.insert(0, str(REPO))
        from tests.services.registry import start_registry

        (work / "registry").mkdir()
        self._registry = start_registry(work / "registry")
        self.registry = next(self._registry)
        self.store = self.registry.url("models")
        sh(sys.executable, "-m", "modelc_build", "keygen", "--out", str(work / "release"), cwd=work)
        self.private_key = (work / "release.key").read_text()
        self.public_key = (work / "release.pub").read_text()
        sh("git", "clone", "-q", str(REPO), str(self.repo), cwd=work)
        sh("git", "config", "user.email", "ci@modelc.invalid", cwd=self.repo)
        sh("git", "config", "user.name", "modelc ci", cwd=self.repo)
        self.base = self.head()

    def head(self) -> str:
        return sh("git", "rev-parse", "HEAD", cwd=self.repo).stdout.strip()

    def commit(self, message: str, change: Callable[[Path], None]) -> str:
        change(self.repo)
        sh("git", "add", "-A", cwd=self.repo)
        sh("git", "commit", "-qm", message, cwd=self.repo)
        return self.head()

    def act(self, name: str, event: str, payload: dict[str, Any], *extra: str) -> Run:
        event_file = self.work / f"{name}.json"
        event_file.write_text(json.dumps({**payload, "repository": {"full_name": OWNER_REPO, "name": "modelc-build",
                                                                     "owner": {"login": "modelc-dev"}}}))
        run_dir = self.work / f"run-{name}"
        arguments = ["bash", str(RUN_SH), event, "-W", WORKFLOW, "-e", str(event_file),
                     "--var", f"MODELC_STORE={self.store}", "--var", "MODELC_SIGN=key", "--var", "MODELC_PREPARE=true",
                     "--var", f"MODELC_PUBLIC_KEY={self.public_key}", "-s", f"MODELC_SIGNING_KEY={self.private_key}", *extra]
        started = time.monotonic()
        log = self.work / f"{name}.log"  # written as act runs: `tail -f` it
        print(f"{name}: act {event} (log: {log})", flush=True)
        with log.open("w") as handle:
            code = subprocess.run(arguments, cwd=self.repo, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "ACT_STATE": str(self.state), "ACT_RUN_DIR": str(run_dir),
                                       "ACT_REPOSITORY": OWNER_REPO}).returncode
        run = Run(name, code, log.read_text(), run_dir, time.monotonic() - started)
        print(run.describe(), flush=True)
        return run

    def expect(self, scenario: str, what: str, ok: bool) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failures.append(f"{scenario}: {what}")

    def close(self) -> None:
        for _ in self._registry:
            pass


class Run:
    JOB = re.compile(r"^\[(?P<job>[^\]]+)\] (?P<mark>🏁|❌|✅)\s+(?P<text>.*)$")

    def __init__(self, name: str, code: int, log: str, folder: Path, seconds: float) -> None:
        self.name, self.code, self.log, self.folder, self.seconds = name, code, log, folder, seconds

    def jobs(self) -> dict[str, str]:
        """Each job act ran (matrix entries apart) and how it ended: succeeded or failed."""
        found: dict[str, str] = {}
        for line in self.log.splitlines():
            match = self.JOB.match(line.strip())
            if match and "Job " in match["text"]:
                found[match["job"]] = "succeeded" if "succeeded" in match["text"] else "failed"
        return found

    def describe(self) -> str:
        jobs = ", ".join(f"{job} {state}" for job, state in sorted(self.jobs().items()))
        return f"{self.name}: act exit {self.code} in {self.seconds:.0f} s: {jobs or 'no job ran'}"

    def annotations(self, kind: str) -> list[str]:
        return [line for line in self.log.splitlines() if f"::{kind} " in line or f"::{kind}::" in line]

    def comments(self) -> list[dict[str, Any]]:
        path = self.folder / "github-api.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def steps_run(self) -> dict[str, list[str]]:
        """Each step that ran, and the jobs it ran in (a step's `▶` line in a job's log)."""
        ran: dict[str, list[str]] = {}
        for line in self.log.splitlines():
            match = re.match(r"^\[(?P<job>[^\]]+)\].*?▶ (?P<step>\S+): ", line.strip())
            if match:
                ran.setdefault(match["step"], []).append(match["job"])
        return ran

    def artifacts(self) -> list[str]:
        root = self.folder / "artifacts"
        return sorted(p.name for p in root.glob("*/*")) if root.is_dir() else []


def small_recipes(repo: Path) -> None:
    """Every recipe but the classifier deleted; the classifier cut to three quick artifacts."""
    import yaml

    for recipe in (repo / "recipes").glob("*.yaml"):
        if recipe.name != "classifier.yaml":
            recipe.unlink()
    path = repo / RECIPE
    data = yaml.safe_load(path.read_text())
    data["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]}, {"backend": "openvino", "precisions": ["fp32"]}]
    data["quantization"] = {"sensitivity_layers": 0}
    data["latency"] = {"runs": 5, "warmup": 1}
    data["gates"] = {"default": {"min_cosine": 0.999}, "fp32": {"max_abs_error": 0.001}, "int8": {"min_cosine": 0.99}}
    data.setdefault("verify", {})["cpus"] = []
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_recipe(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        import yaml

        path = repo / RECIPE
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return apply


def pull_request(number: int, base: str, head: str) -> dict[str, Any]:
    return {"action": "synchronize", "number": number, "pull_request": {"number": number, "head": {"ref": f"pr-{number}", "sha": head},
                                                                        "base": {"ref": "main", "sha": base}}}


def scenario_push(bench: Bench) -> None:
    before = bench.head()
    after = bench.commit("ci: the small classifier only (the other recipes deleted)", small_recipes)
    run = bench.act("push", "push", {"ref": "refs/heads/main", "before": before, "after": after, "deleted": False})
    jobs = run.jobs()
    bench.expect("push", "act succeeded", run.code == 0)
    bench.expect("push", "plan, prepare, three target jobs, release, deploy check", all(
        sum(job.split("/")[1 if job.startswith("models/") else 0].strip().startswith(kind) for job in jobs) >= count
        for kind, count in (("plan", 1), ("prepare", 1), ("targets", 3), ("release", 1), ("deploy-check", 1))))
    ran = run.steps_run()
    twice = {step: where for step, where in ran.items() if len(set(where)) > 1}
    bench.expect("push", f"no step ran in two jobs ({len(ran)} steps ran{': ' + str(twice) if twice else ''})", ran and not twice)
    bench.expect("push", "the release job ran no step: every measurement came from the step cache",
                 not any("release" in job for where in ran.values() for job in where) and "✓ release: 0 step(s) run" in run.log)
    bench.expect("push", "every job succeeded", jobs and all(state == "succeeded" for state in jobs.values()))
    from modelc_build.stores import open_store

    digest = open_store(bench.store).release_digest("tiny-classifier-shapes", "1.0.0")
    bench.expect("push", f"the registry holds tiny-classifier-shapes 1.0.0 ({digest})", digest is not None)
    bench.expect("push", "the deploy check verified the key signature and ran the golden set",
                 "verified and wrote" in run.log and "golden samples" in run.log and "[pass]" in run.log)


def scenario_dispatch(bench: Bench) -> None:
    run = bench.act("dispatch", "workflow_dispatch", {"inputs": {}})
    bench.expect("dispatch", "act succeeded", run.code == 0)
    hits = len(re.findall(r"Cache restored from key: modelc-steps-", run.log))
    saves = len(re.findall(r"Cache saved with key: modelc-steps-", run.log))
    bench.expect("dispatch", f"every build job restored its step cache ({hits} exact restores, {saves} saved again)",
                 hits >= 4 and saves == 0)
    bench.expect("dispatch", "the release was a no-op (identical content)", "already released (same content)" in run.log
                 or "already stored with identical content" in run.log or "identical version already stored" in run.log)


def scenario_pr_change(bench: Bench) -> None:
    base = bench.head()

    def newer(data: dict[str, Any]) -> None:
        data["version"] = "1.1.0"
        data["quantization"] = {"sensitivity_layers": 0, "onnxruntime_weights": "int8"}
    head = bench.commit("classifier 1.1.0: 7-bit int8 weights", edit_recipe(newer))
    run = bench.act("pr-change", "pull_request", pull_request(7, base, head))  # the whole workflow: the jobs a PR skips too
    bench.expect("pr-change", "act succeeded", run.code == 0)
    bodies = [(c.get("body") or {}).get("body", "") for c in run.comments() if c.get("method") in ("POST", "PATCH")]
    body = bodies[-1] if bodies else ""
    bench.expect("pr-change", "one comment, comparing 1.1.0 with the released 1.0.0",
                 "tiny-classifier-shapes 1.1.0 against tiny-classifier-shapes 1.0.0" in body and "| `onnxruntime-int8` |" in body)
    print("  comment:\n" + "\n".join("    " + line for line in body.splitlines()), flush=True)


def scenario_pr_gate(bench: Bench) -> None:
    base = bench.head()

    def strict(data: dict[str, Any]) -> None:
        data["version"] = "1.2.0"
        data["gates"]["fp32"] = {"max_abs_error": 1.0e-12}  # no runtime computes the reference to the last bit
    head = bench.commit("classifier 1.2.0: a gate no artifact meets", edit_recipe(strict))
    run = bench.act("pr-gate", "pull_request", pull_request(8, base, head))
    bench.expect("pr-gate", "the job failed", run.code != 0)
    line = next(i for i, text in enumerate((bench.repo / RECIPE).read_text().splitlines(), start=1) if "1.0e-12" in text)
    bench.expect("pr-gate", f"the missed gate is annotated on {RECIPE} line {line}",
                 any(f"file={RECIPE},line={line}" in a and "max_abs_error" in a for a in run.annotations("error")))
    bodies = [(c.get("body") or {}).get("body", "") for c in run.comments() if c.get("method") in ("POST", "PATCH")]
    body = bodies[-1] if bodies else ""
    bench.expect("pr-gate", "the comment lists the failure first, with the gate and its recipe line",
                 body.find("❌") != -1 and "max_abs_error" in body and f"| {line} |" in body)
    bench.expect("pr-gate", "the report was uploaded", "modelc-pull-request" in run.artifacts())
    print("  comment:\n" + "\n".join("    " + line for line in body.splitlines()), flush=True)


def scenario_wrong_class(bench: Bench) -> None:
    from modelc_build.host import host_class

    other = "avx2" if host_class() != "avx2" else "amx"
    run = bench.act("wrong-class", "workflow_dispatch", {"inputs": {}}, "--var", f"MODELC_CPU_CLASS={other}",
                    "--var", f"MODELC_RUNNERS={json.dumps({other: 'ubuntu-latest'})}")
    bench.expect("wrong-class", "the run failed", run.code != 0)
    bench.expect("wrong-class", f"the prepare job failed in one line: routed to {other}, runs on {host_class()}",
                 f"this job was routed to CPU class {other} but runs on {host_class()}" in run.log
                 and any(job.startswith("models/prepare") or job.startswith("prepare") for job, state in run.jobs().items()
                         if state == "failed"))


SCENARIOS = {"push": scenario_push, "dispatch": scenario_dispatch, "pr-change": scenario_pr_change, "pr-gate": scenario_pr_gate,
             "wrong-class": scenario_wrong_class}


def main(names: list[str]) -> int:
    if not RUN_SH.is_file():  # a checkout without the harness beside it: said loudly, not a failure of modelc
        print(f"workflows: WARNING: the act harness is not at {RUN_SH} (set MODELC_ACT_RUN, or MODELC_ACT_REQUIRED=1 "
              "to fail here): the workflow scenarios did NOT run", file=sys.stderr)
        return 1 if os.environ.get("MODELC_ACT_REQUIRED") else 0
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO, capture_output=True).returncode != 0:
        print(f"workflows: WARNING: {REPO} is not a git checkout (the scenarios clone it and diff its history): "
              "the workflow scenarios did NOT run", file=sys.stderr)
        return 1 if os.environ.get("MODELC_ACT_REQUIRED") else 0
    work = Path(tempfile.mkdtemp(prefix="modelc-workflows-"))
    try:
        bench = Bench(work)
    except BaseException as missing:  # noqa: BLE001 - pytest.skip's Skipped: no docker-registry here
        if type(missing).__name__ != "Skipped":
            raise
        print(f"workflows: WARNING: {missing}: the workflow scenarios did NOT run", file=sys.stderr)
        return 1 if os.environ.get("MODELC_ACT_REQUIRED") else 0
    started = time.monotonic()
    try:
        for name in names or list(SCENARIOS):
            SCENARIOS[name](bench)
    finally:
        bench.close()
        print(f"workflows: {len(names or SCENARIOS)} scenario(s) in {time.monotonic() - started:.0f} s; logs in {work}")
        if not os.environ.get("KEEP") and not bench.failures:
            shutil.rmtree(work, ignore_errors=True)
    for failure in bench.failures:
        print(f"workflows: FAILED {failure}", file=sys.stderr)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
