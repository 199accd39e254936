"""report.html: the release's report as one self-contained page (no network, no script), with the
plots a person would rather look at than read: each artifact's accuracy against its gates, latency
p10/p50/p90, INT8 per-layer sensitivity, and the history across stored versions."""
from __future__ import annotations

import html
from typing import Any

WIDTH = 720
ROW = 26
LEFT = 190

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:60rem;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}
.note{color:#57606a}svg{display:block;margin:.5rem 0}svg text{font:12px system-ui,sans-serif;fill:#1b1f24}
.bar{fill:#54aeff}.bar.fail{fill:#ff8182}.gate{stroke:#cf222e;stroke-width:2}.axis{stroke:#8c959f}
.range{stroke:#0969da;stroke-width:6;stroke-linecap:round}.median{fill:#0a3069}.line{fill:none;stroke-width:2}
"""
COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#57606a", "#0550ae")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(name: str, height: int, body: list[str], label: str) -> str:
    return (f'<svg data-chart="{_e(name)}" role="img" aria-label="{_e(label)}" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _cosine_chart(artifacts: list[dict[str, Any]]) -> str:
    """Lowest output cosine per artifact (1 - cosine on a log scale: 0.9, 0.99, 0.999 … equally
    apart) with the cosine gate it was held to."""
    import math

    def x(cosine: float) -> float:
        error = min(max(1.0 - cosine, 1e-7), 1.0)
        return LEFT + (WIDTH - LEFT - 20) * (1.0 - (math.log10(error) + 7) / 7)

    body = [f'<line class="axis" x1="{LEFT}" y1="4" x2="{LEFT}" y2="{ROW * len(artifacts) + 4}"/>']
    for row, a in enumerate(artifacts):
        cosines = [o["cosine"] for o in a.get("outputs") or [] if o.get("cosine") is not None]
        if not cosines:
            continue
        worst = min(cosines)
        y = 6 + row * ROW
        gate = next((g for g in a.get("gates") or [] if g["gate"] == "min_cosine"), None)
        passed = gate is None or gate["passed"]
        body.append(f'<text x="4" y="{y + 14}">{_e(a["target"])}</text>')
        body.append(f'<rect class="bar{"" if passed else " fail"}" x="{LEFT}" y="{y}" width="{max(x(worst) - LEFT, 1):.1f}" '
                    f'height="{ROW - 8}"><title>{_e(a["target"])}: lowest output cosine {worst:.6f}</title></rect>')
        body.append(f'<text x="{min(x(worst) + 4, WIDTH - 70):.1f}" y="{y + 14}">{worst:.5f}</text>')
        if gate is not None:
            gx = x(gate["threshold"])
            body.append(f'<line class="gate" x1="{gx:.1f}" y1="{y - 2}" x2="{gx:.1f}" y2="{y + ROW - 4}">'
                        f'<title>gate min_cosine {gate["threshold"]}</title></line>')
    return _svg("accuracy", ROW * len(artifacts) + 10, body, "lowest output cosine per artifact with its gate")


def _metric_chart(artifacts: list[dict[str, Any]], reference: float | None) -> str:
    rows = [a for a in artifacts if a.get("task_metric")]
    if not rows:
        return ""
    top = max([reference or 0.0] + [a["task_metric"]["value"] for a in rows]) or 1.0
    scale = (WIDTH - LEFT - 70) / top
    body = []
    for row, a in enumerate(rows):
        metric = a["task_metric"]
        y = 6 + row * ROW
        gates = [g for g in a.get("gates") or [] if g["gate"] in ("max_metric_drop", "min_metric", "min_top5_containment",
                                                                    "min_reference_map50")]
        passed = all(g["passed"] for g in gates)
        body.append(f'<text x="4" y="{y + 14}">{_e(a["target"])}</text>')
        body.append(f'<rect class="bar{"" if passed else " fail"}" x="{LEFT}" y="{y}" width="{max(metric["value"] * scale, 1):.1f}" '
                    f'height="{ROW - 8}"><title>{_e(metric["name"])} {metric["value"]:.2f}</title></rect>')
        body.append(f'<text x="{LEFT + metric["value"] * scale + 4:.1f}" y="{y + 14}">{metric["value"]:.2f}</text>')
    if reference is not None:
        rx = LEFT + reference * scale
        body.append(f'<line class="gate" x1="{rx:.1f}" y1="2" x2="{rx:.1f}" y2="{ROW * len(rows) + 4}">'
                    f'<title>reference {reference:.2f}</title></line>')
    return _svg("task-metric", ROW * len(rows) + 10, body, "task metric per artifact, the reference's marked")


def _latency_chart(artifacts: list[dict[str, Any]]) -> str:
    rows = [a for a in artifacts if a.get("latency") and a["latency"].get("p50") is not None]
    if not rows:
        return ""
    top = max(a["latency"]["p90"] for a in rows) or 1.0
    scale = (WIDTH - LEFT - 90) / top
    body = []
    for row, a in enumerate(rows):
        t = a["latency"]
        y = 6 + row * ROW + (ROW - 8) / 2
        body.append(f'<text x="4" y="{y + 4:.0f}">{_e(a["target"])}</text>')
        body.append(f'<line class="range" x1="{LEFT + t["p10"] * scale:.1f}" y1="{y:.1f}" x2="{LEFT + t["p90"] * scale:.1f}" '
                    f'y2="{y:.1f}"><title>p10 {t["p10"]:.3f} ms, p90 {t["p90"]:.3f} ms</title></line>')
        body.append(f'<circle class="median" cx="{LEFT + t["p50"] * scale:.1f}" cy="{y:.1f}" r="5">'
                    f'<title>p50 {t["p50"]:.3f} ms</title></circle>')
        body.append(f'<text x="{LEFT + t["p90"] * scale + 8:.1f}" y="{y + 4:.0f}">{t["p50"]:.2f} ms</text>')
    return _svg("latency", ROW * len(rows) + 10, body, "latency p10-p90 per artifact, p50 marked")


def _sensitivity_chart(sensitivity: dict[str, Any] | None) -> str:
    layers = (sensitivity or {}).get("layers") or []
    if not layers:
        return ""
    values = [1.0 - layer["min_cosine"] for layer in layers]
    top = max(values) or 1.0
    scale = (WIDTH - LEFT - 90) / top
    body = []
    for row, (layer, value) in enumerate(zip(layers, values)):
        y = 6 + row * ROW
        body.append(f'<text x="4" y="{y + 14}">{_e(str(layer["layer"])[:26])}</text>')
        body.append(f'<rect class="bar" x="{LEFT}" y="{y}" width="{max(value * scale, 1):.1f}" height="{ROW - 8}">'
                    f'<title>{_e(layer["layer"])} ({_e(layer["op_type"])}) alone in INT8: lowest output cosine '
                    f'{layer["min_cosine"]:.6f}</title></rect>')
        body.append(f'<text x="{LEFT + value * scale + 4:.1f}" y="{y + 14}">{value:.2e}</text>')
    return _svg("sensitivity", ROW * len(layers) + 10, body, "INT8 sensitivity: 1 - lowest output cosine per layer")


def _steps_table(steps: dict[str, Any] | None) -> str:
    if not steps or not steps.get("steps"):
        return ""
    ran = [s for s in steps["steps"] if s["ran"]]
    rows = "".join(f"<tr><td>{_e(s['id'])}</td><td>{s['seconds']:.1f}</td><td>"
                   + ("—" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:.0f}") + "</td></tr>" for s in ran)
    table = ("<table data-table=\"steps\"><tr><th>step</th><th>seconds</th><th>peak MiB</th></tr>" + rows
             + "</table>") if ran else ""
    return (f"<h2>Build steps</h2><p class=\"note\" data-note=\"steps\">{len(ran)} ran in this build, "
            f"{len(steps['steps']) - len(ran)} came from a cache. Peak memory is the step's own process; a dash: "
            "it ran in the build's process.</p>" + table)


def _history_chart(history: list[dict[str, Any]], current: dict[str, Any]) -> str:
    """Each artifact's lowest output cosine across the stored versions and this one."""
    reports = history + [current]
    if len(reports) < 2:
        return ""
    targets = sorted({a["target"] for r in reports for a in r.get("artifacts", [])})
    points: dict[str, list[tuple[int, float]]] = {t: [] for t in targets}
    for index, report in enumerate(reports):
        for a in report.get("artifacts", []):
            cosines = [o["cosine"] for o in a.get("outputs") or [] if o.get("cosine") is not None]
            if cosines:
                points[a["target"]].append((index, min(cosines)))
    low = min((c for series in points.values() for _, c in series), default=0.0)
    low = min(low, 0.999)
    height, top_y = 220, 16
    step = (WIDTH - LEFT - 40) / max(len(reports) - 1, 1)

    def y(cosine: float) -> float:
        return top_y + (1.0 - (cosine - low) / (1.0 - low or 1.0)) * (height - top_y - 40)

    body = [f'<line class="axis" x1="{LEFT}" y1="{height - 24}" x2="{WIDTH - 20}" y2="{height - 24}"/>']
    for index, report in enumerate(reports):
        body.append(f'<text x="{LEFT + index * step - 12:.1f}" y="{height - 6}">{_e(report.get("version"))}</text>')
    for number, (target, series) in enumerate(points.items()):
        colour = COLOURS[number % len(COLOURS)]
        if len(series) >= 2:
            path = " ".join(f"{LEFT + i * step:.1f},{y(c):.1f}" for i, c in series)
            body.append(f'<polyline class="line" stroke="{colour}" points="{path}"><title>{_e(target)}</title></polyline>')
        for i, c in series:
            body.append(f'<circle cx="{LEFT + i * step:.1f}" cy="{y(c):.1f}" r="3" fill="{colour}">'
                        f'<title>{_e(target)} {_e(reports[i].get("version"))}: {c:.6f}</title></circle>')
        body.append(f'<text x="4" y="{top_y + number * 16}" fill="{colour}">{_e(target)}</text>')
    return _svg("history", height, body, "lowest output cosine per artifact across versions")


def to_html(report: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    """The report (report.json's document) as a page; `history`: older versions' reports, oldest first."""
    artifacts = report.get("artifacts", [])
    verdict = ("all gates passed" if report.get("passed") else "a step failed: nothing released" if report.get("failed_steps")
               else "gates missed")
    rows = []
    for a in artifacts:
        metric = a.get("task_metric") or {}
        missed = [g for g in a.get("gates") or [] if not g["passed"]]
        state = '<span class="pass">pass</span>' if a.get("passed") else '<span class="fail">FAIL</span>'
        latency = "—" if a.get("latency_ms") is None else f"{a['latency_ms']:.3f}"
        value = "—" if not metric else f"{metric['value']:.2f}"
        gates = "" if not missed else " " + _e("; ".join(g["gate"] for g in missed))
        rows.append(f"<tr><td>{_e(a['target'])}</td><td>{a.get('size_bytes', 0) / 2**20:.2f} MiB</td>"
                    f"<td>{latency}</td><td>{value}</td><td>{state}{gates}</td></tr>")
    sections = [
        f"<h1>modelc: {_e(report.get('name'))} {_e(report.get('version'))} — "
        f"<span class=\"{'pass' if report.get('passed') else 'fail'}\">{verdict}</span></h1>",
        f"<p>Reference: {_e(report.get('reference'))}. Evaluation data: {_e(report.get('evaluation_data'))} "
        f"({_e(report.get('samples'))} samples).</p>",
        "<table><tr><th>artifact</th><th>size</th><th>latency ms (p50)</th><th>task metric %</th><th>gates</th></tr>"
        + "".join(rows) + "</table>",
        "<h2>Accuracy against the gates</h2><p class=\"note\">Lowest output cosine of each artifact (log scale of "
        "1 − cosine); the red tick is its min_cosine gate.</p>" + _cosine_chart(artifacts),
    ]
    metric_chart = _metric_chart(artifacts, report.get("reference_metric"))
    if metric_chart:
        sections.append("<h2>Task metric</h2><p class=\"note\">The red line is the reference model's own value.</p>"
                        + metric_chart)
    latency = _latency_chart(artifacts)
    if latency:
        sections.append("<h2>Latency</h2><p class=\"note\">Batch-1 runs: the bar spans p10–p90, the dot is p50.</p>" + latency)
    sensitivity = _sensitivity_chart(report.get("sensitivity"))
    if sensitivity:
        sections.append("<h2>INT8 sensitivity</h2><p class=\"note\">Each layer quantized alone: how far the output "
                        "moves (1 − lowest output cosine). Candidates for quantization.ignore.</p>" + sensitivity)
    trend = _history_chart(history or [], report)
    if trend:
        sections.append("<h2>History</h2><p class=\"note\">Lowest output cosine per artifact across the stored "
                        "versions and this one.</p>" + trend)
    steps = _steps_table(report.get("steps"))
    if steps:
        sections.append(steps)
    flags = report.get("flags") or []
    if flags:
        sections.append("<h2>Flags</h2><ul>" + "".join(f"<li>{_e(flag)}</li>" for flag in flags) + "</ul>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            "content=\"width=device-width,initial-scale=1\"><title>modelc report: "
            f"{_e(report.get('name'))} {_e(report.get('version'))}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
