"""The table of medians and ratios that bench/peers writes to docs/performance.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.peers.run import Options


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    target: str


ROWS = (
    Row("cstore_1", "C-STORE ingest, 1 association (storescu)", "instances/s", "≥ 1.0 x Orthanc"),
    Row("cstore_4", "C-STORE ingest, 4 associations", "instances/s", "≥ 1.0 x Orthanc"),
    Row("upload_1", "HTTP upload, 1 client (curl)", "instances/s", "≥ 1.0 x Orthanc"),
    Row("upload_4", "HTTP upload, 4 clients", "instances/s", "≥ 1.0 x Orthanc"),
    Row("patient_cookie", "GET patient, cookie (Orthanc: Basic)", "req/s", "≥ 0.5 x Orthanc"),
    Row("patient_basic", "GET patient, Basic", "req/s", "≥ 0.9 x our cookie rate"),
    Row("study_cookie", "GET study, cookie (Orthanc: Basic)", "req/s", "≥ 0.5 x Orthanc"),
    Row("study_basic", "GET study, Basic", "req/s", "≥ 0.9 x our cookie rate"),
    Row(
        "search_rest",
        "Search by PatientID: REST patients?patient_id= (Orthanc: /tools/find)",
        "req/s",
        "≥ 2 x Orthanc",
    ),
    Row(
        "search_qido",
        "Search by PatientID: QIDO-RS studies?PatientID= (Orthanc: /tools/find)",
        "req/s",
        "≥ 2 x Orthanc",
    ),
    Row("instance", "Instance retrieve: WADO-RS (Orthanc: /instances/{id}/file)", "MB/s", "≥ 1.0 x Orthanc"),
    Row("zip", "Study zip download (the studies' DICOM bytes per second)", "MB/s", "≥ 1.0 x Orthanc"),
    Row("ceiling", "Empty endpoint /healthz (our ceiling; Orthanc: none)", "req/s", "—"),
)
# Rows whose Orthanc figure comes from another row's run.
ORTHANC_FIGURE = {
    "patient_basic": "patient_cookie",
    "study_basic": "study_cookie",
    "search_qido": "search_rest",
}


@dataclass
class Results:
    """Per server name and row key, one figure per round."""

    figures: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    rss: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, server: str, key: str, value: float) -> None:
        self.figures.setdefault(server, {}).setdefault(key, []).append(value)

    def add_rss(self, server: str, key: str, value: float) -> None:
        self.rss.setdefault(server, {}).setdefault(key, []).append(value)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _paired(ours: list[float], theirs: list[float]) -> float | None:
    pairs = [a / b for a, b in zip(ours, theirs, strict=False) if b]
    return statistics.median(pairs) if pairs else None


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    # Below 1, two significant digits: a tiny dataset on a slow machine is not "0.0".
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _met(value: float | None, bound: float) -> str:
    if value is None:
        return "—"
    return "yes" if value >= bound else "**no**"


BOUNDS = {
    "cstore_1": 1.0,
    "cstore_4": 1.0,
    "upload_1": 1.0,
    "upload_4": 1.0,
    "patient_cookie": 0.5,
    "study_cookie": 0.5,
    "search_rest": 2.0,
    "search_qido": 2.0,
    "instance": 1.0,
    "zip": 1.0,
}


def render(results: Results, options: Options, versions: dict[str, str], command: str) -> str:
    ours = [name for name in results.figures if name.startswith("iPACS")]
    peer = "Orthanc" if "Orthanc" in results.figures else None
    spec = options.spec
    lines = [
        "## iPACS beside Orthanc" + (", with PostgreSQL" if options.pg_url else ""),
        "",
        f"Command: `{command}`",
        "",
        f"Dataset: {spec.patients} patients x {spec.studies} studies x {spec.series} series x "
        f"{spec.instances} instances of {spec.rows}x{spec.columns} 16-bit MR "
        f"({spec.total:,} instances). Servers: {', '.join(f'{k} {v}' for k, v in versions.items())}. "
        f"{options.rounds} rounds, each starting every server afresh and alternating the order of the "
        f"servers per workload; figures are medians over the rounds, ratios the median of the rounds' "
        f"paired ratios (ours ÷ Orthanc). wrk: {options.connections} connections, "
        f"{options.seconds:g} s per run after a 1 s warm-up.",
        "",
    ]
    header = ["Workload", "unit", *ours]
    if peer:
        header += [peer, *(f"{name} ÷ Orthanc" for name in ours), "target", "met"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        cells = [row.label, row.unit]
        cells += [_number(_median(results.figures.get(name, {}).get(row.key, []))) for name in ours]
        if peer:
            theirs = results.figures[peer].get(ORTHANC_FIGURE.get(row.key, row.key), [])
            ratios = [_paired(results.figures.get(name, {}).get(row.key, []), theirs) for name in ours]
            cells += [_number(_median(theirs)), *(_ratio(r) for r in ratios)]
            bound = BOUNDS.get(row.key)
            cells += [row.target, " / ".join(_met(r, bound) for r in ratios) if bound else "see below"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Our own ratios (same run):",
        "",
        "| ratio | " + " | ".join(ours) + " | target |",
        "|---|" + "---|" * len(ours) + "---|",
    ]
    for label, top, bottom, bound in (
        ("GET patient: Basic ÷ cookie", "patient_basic", "patient_cookie", 0.9),
        ("GET study: Basic ÷ cookie", "study_basic", "study_cookie", 0.9),
        ("GET patient, cookie ÷ empty-endpoint ceiling", "patient_cookie", "ceiling", 0.5),
        ("GET study, cookie ÷ empty-endpoint ceiling", "study_cookie", "ceiling", 0.5),
    ):
        values = [
            _paired(results.figures.get(n, {}).get(top, []), results.figures.get(n, {}).get(bottom, []))
            for n in ours
        ]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{_ratio(v)} ({_met(v, bound)})" for v in values)
            + f" | ≥ {bound} |"
        )
    keys = [k for k in ("rounds", "1x", f"{options.growth}x") if any(k in f for f in results.rss.values())]
    titles = {
        "rounds": f"the rounds' four ingest workloads ({spec.total:,} instances)",
        "1x": f"C-STORE x4, first {spec.total:,} instances",
        f"{options.growth}x": f"C-STORE x4, all {spec.total * options.growth:,} ({options.growth}x)",
    }
    if keys:
        lines += [
            "",
            "Peak RSS of each server during ingest (VmHWM reset when ingest starts, summed over "
            "iPACS's processes; target ≤ 300 MB and flat as the dataset grows):",
            "",
            "| server | " + " | ".join(titles[k] for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for name, figures in results.rss.items():
            cells = [f"{_number(_median(figures.get(k, [])))} MB" if figures.get(k) else "—" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tools = sorted(set(results.tools.values()))
    lines += [
        "",
        "Clients (the same binaries for every server; Orthanc's through `nsenter --net=/proc/PID/ns/net`):",
        "",
        "```",
        "TCP_NODELAY=1 storescu --aetitle BENCHSCU --call <AE> 127.0.0.1 <port> <files...>   "
        "# 1 or 4 at once, contiguous quarters of the files",
        "curl -sS -K upload-N.curl     # per file: url, user, header Content-Type: application/dicom, "
        "data-binary @file",
        f"wrk -t2 -c{options.connections} -d{options.seconds:g}s -s wrk.lua http://127.0.0.1:<port>   "
        "# wrk.lua cycles through the requests",
        "curl -sS -K download.curl     # the first studies' zips, one after the other",
        "```",
        "",
        f"Load generators used: {', '.join(tools)}.",
    ]
    return "\n".join(lines)
