"""The pull-request comment: what a reviewer reads about the models a pull request builds.

One comment per pull request, found by its marker and its author (the workflow's token's user,
`github-actions[bot]` by default) over every page of the conversation, and updated in place. Its
body puts failures first (the error, each missed gate with the recipe line that set it), then each
built recipe against its last released version. A token that may not write (a fork's pull request:
403) is not a crash: the caller writes the body to the job summary and warns.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelc_build.compare import MARKER
from modelc_build.errors import ModelcError, NetworkError

DEFAULT_AUTHOR = "github-actions[bot]"
PAGE = 100


class CommentRefused(ModelcError):
    """GitHub refused the comment (a read-only token: a fork's pull request)."""

    exit_code = 0


def comment_body(results: list[dict[str, Any]], store_url: str) -> tuple[str, list[str]]:
    """The body for `results` (the build step's `results` output) and the store errors met on
    the way (each also said in the body, where it applies)."""
    from modelc_build.compare import markdown, previous_version, report_of
    from modelc_build.stores import open_store

    errors: list[str] = []
    parts = [MARKER]
    failed = [r for r in results if not r.get("passed")]
    if failed:
        parts.append(f"## ❌ {len(failed)} of {len(results)} recipe(s) failed\n")
        parts += [_failure(result) for result in failed]
    try:
        store = open_store(store_url)
    except ModelcError as error:
        errors.append(f"the store {store_url}: {error.message}")
        store = None
    for result in [r for r in results if r.get("passed")]:
        name, version = result["name"], result["version"]
        title = f"### ✅ {name} {version}"
        after = _report(result)
        if store is None or after is None:
            parts.append(f"{title}\n\n{'No report to compare.' if after is None else 'Not compared: ' + errors[-1]}\n")
            continue
        try:
            older = previous_version(store, name, version)
            if older is None:
                parts.append(f"{title}\n\nNo earlier release of {name} in {store_url} to compare with.\n")
                continue
            before = report_of(store, name, older)
        except ModelcError as error:
            errors.append(f"{name}: the last release could not be read from {store_url}: {error.message}")
            parts.append(f"{title}\n\n⚠️ Not compared: {errors[-1]}\n")
            continue
        parts.append(markdown(before, after).replace(MARKER + "\n", ""))
    return "\n".join(parts), errors


def _failure(result: dict[str, Any]) -> str:
    title = f"### ❌ {result.get('name') or result['recipe']} {result.get('version', '')}".rstrip()
    lines = [title, "", f"`{result['recipe']}`: {result.get('error') or 'failed'} (exit {result.get('exit_code')})"]
    misses = result.get("missed_gates") or []
    if misses:
        lines += ["", "| artifact | gate | observed | threshold | recipe line |", "|---|---|---:|---:|---:|"]
        for miss in misses:
            where = f" on {miss['setting']}" if miss.get("setting") else ""
            output = f" (`{miss['output']}`)" if miss.get("output") else ""
            lines.append(f"| `{miss['target']}`{where} | {miss['gate']}{output} | {_number(miss['observed'])} | "
                         f"{_number(miss['threshold'])} | {miss.get('line') or ''} |")
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _report(result: dict[str, Any]) -> dict[str, Any] | None:
    folder = result.get("report")
    if folder and (Path(folder) / "report.json").is_file():
        report: dict[str, Any] = json.loads((Path(folder) / "report.json").read_text())
        return report
    return None


@dataclass(frozen=True)
class PullRequest:
    api: str
    repository: str
    number: int
    token: str
    author: str = DEFAULT_AUTHOR

    @classmethod
    def from_environment(cls, author: str = DEFAULT_AUTHOR) -> PullRequest:
        event = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text())
        number = (event.get("pull_request") or {}).get("number") or event.get("number")
        return cls(os.environ.get("GITHUB_API_URL", "https://api.github.com"), os.environ["GITHUB_REPOSITORY"],
                   int(number), os.environ.get("GITHUB_TOKEN", ""), author)

    def post(self, body: str) -> str:
        """Create or update the one modelc comment; "created" or "updated"."""
        mine = self._find()
        if mine is not None:
            self._call("PATCH", f"/repos/{self.repository}/issues/comments/{mine['id']}", {"body": body})
            return "updated"
        self._call("POST", f"/repos/{self.repository}/issues/{self.number}/comments", {"body": body})
        return "created"

    def _find(self) -> dict[str, Any] | None:
        """The comment with the marker written by `author`, on any page."""
        page = 1
        while True:
            listed = self._call("GET", f"/repos/{self.repository}/issues/{self.number}/comments",
                                params={"per_page": PAGE, "page": page})
            for comment in listed:
                if MARKER in (comment.get("body") or "") and (comment.get("user") or {}).get("login", self.author) == self.author:
                    return dict(comment)
            if len(listed) < PAGE:
                return None
            page += 1

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json"}
        try:
            answer = requests.request(method, f"{self.api}{path}", headers=headers, json=body, params=params, timeout=30)
        except requests.RequestException as error:
            raise NetworkError(f"GitHub's API ({self.api}) could not be reached: {error}") from error
        if answer.status_code in (401, 403, 404) and method != "GET" or answer.status_code == 403:
            raise CommentRefused(f"GitHub refused to {method} the comment ({answer.status_code}: the token may not write "
                                 "to this pull request, e.g. one from a fork)")
        if answer.status_code >= 400:
            raise NetworkError(f"GitHub's API answered {answer.status_code} to {method} {path}: {answer.text[:200]}")
        return answer.json() if answer.content else None
