"""Alternating A/B runs of every workload against iPACS and Orthanc, and the table of medians.

Each round starts every server afresh and runs each workload on all of them
back to back, the order flipping from one workload to the next and from one
round to the next, so that the machine's other load falls on both alike. A
figure is the median over the rounds; a ratio is the median of the rounds'
paired ratios (ours / Orthanc).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers import workloads
from bench.peers.dataset import DatasetSpec, InstanceFile, SyntheticDataset, generate
from bench.peers.ipacs import IpacsServer
from bench.peers.orthanc import OrthancServer, orthanc_id
from bench.peers.servers import Credentials, Server
from bench.peers.table import ROWS, Results, render
from bench.peers.workloads import Rate, Request

CREDENTIALS = Credentials("bench", "bench-password-1")
INGEST = (("cstore_1", 1), ("cstore_4", 4), ("upload_1", 1), ("upload_4", 4))
RETRIEVE_SAMPLE = 200
ZIP_STUDIES = 8


@dataclass
class Options:
    spec: DatasetSpec
    rounds: int
    seconds: float
    connections: int
    workers: int
    growth: int
    pg_url: str | None
    orthanc: bool
    workdir: Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def basic_header(credentials: Credentials) -> str:
    return "Basic " + base64.b64encode(credentials.pair.encode()).decode()


# ---- what each server is asked, by workload


@dataclass
class Catalog:
    """The URLs of one server's copy of the dataset."""

    patients: list[str]
    studies: list[str]
    searches: list[Request]
    qido: list[Request]
    instances: list[str]
    archives: list[str]


def ipacs_catalog(server: IpacsServer, dataset: SyntheticDataset) -> Catalog:
    api, pid = server.api, server.project_id
    patients = server.get_json(f"{api}/projects/{pid}/patients?limit=1000")
    pks = {p["patient_id"]: p["id"] for p in patients}
    study_paths = {}
    for pk in pks.values():
        for study in server.get_json(f"{api}/projects/{pid}/patients/{pk}/studies?limit=1000"):
            study_paths[study["study_instance_uid"]] = (
                f"{api}/projects/{pid}/patients/{pk}/studies/{study['id']}"
            )
    ids = dataset.patient_ids()
    return Catalog(
        patients=[f"{api}/projects/{pid}/patients/{pks[p]}" for p in ids],
        studies=[study_paths[uid] for _, uid in dataset.studies()],
        searches=[Request(f"{api}/projects/{pid}/patients?patient_id={p}") for p in ids],
        qido=[Request(f"/dicomweb/studies?PatientID={p}") for p in ids],
        instances=[
            f"/dicomweb/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_uid}"
            for f in _sample(dataset.files, RETRIEVE_SAMPLE)
        ],
        archives=[study_paths[uid] + "/archive" for _, uid in dataset.studies()[:ZIP_STUDIES]],
    )


def orthanc_catalog(server: OrthancServer, dataset: SyntheticDataset) -> Catalog:
    ids = dataset.patient_ids()
    studies = [orthanc_id(p, s) for p, s in dataset.studies()]
    first = dataset.files[0]
    check = server.get_json(
        f"/instances/{orthanc_id(first.patient_id, first.study_uid, first.series_uid, first.sop_uid)}"
    )
    assert check["MainDicomTags"]["SOPInstanceUID"] == first.sop_uid
    find = [
        Request("/tools/find", "POST", json.dumps({"Level": "Study", "Query": {"PatientID": p}})) for p in ids
    ]
    return Catalog(
        patients=[f"/patients/{orthanc_id(p)}" for p in ids],
        studies=[f"/studies/{s}" for s in studies],
        searches=find,
        qido=find,
        instances=[
            f"/instances/{orthanc_id(f.patient_id, f.study_uid, f.series_uid, f.sop_uid)}/file"
            for f in _sample(dataset.files, RETRIEVE_SAMPLE)
        ],
        archives=[f"/studies/{s}/archive" for s in studies[:ZIP_STUDIES]],
    )


def _sample(files: list[InstanceFile], count: int) -> list[InstanceFile]:
    step = max(1, len(files) // count)
    return files[::step][:count]


def stored_count(server: Server, dataset: SyntheticDataset) -> int:
    if isinstance(server, OrthancServer):
        return int(server.get_json("/statistics")["CountInstances"])
    assert isinstance(server, IpacsServer)
    catalog = ipacs_catalog(server, dataset)
    return sum(server.get_json(path)["instance_count"] for path in catalog.studies)


# ---- one round


def ingest(server: Server, key: str, files: list[InstanceFile], parallel: int, workdir: Path) -> Rate:
    if key.startswith("cstore"):
        return workloads.storescu(server, files, parallel)
    if isinstance(server, IpacsServer):
        path = f"{server.api}/projects/{server.project_id}/dicom"
    else:
        path = "/instances"
    return workloads.curl_upload(server, files, parallel, path, "application/dicom", workdir)


def _ordered(servers: list[Server], turn: int) -> list[Server]:
    shift = turn % len(servers)
    return servers[shift:] + servers[:shift]


def start_servers(options: Options, label: str, with_pg: bool = True) -> list[Server]:
    servers: list[Server] = [
        IpacsServer(options.workdir / f"{label}-ipacs-sqlite", CREDENTIALS, options.workers)
    ]
    if options.orthanc:
        servers.append(OrthancServer(options.workdir / f"{label}-orthanc", CREDENTIALS))
    if options.pg_url and with_pg:
        servers.append(
            IpacsServer(options.workdir / f"{label}-ipacs-pg", CREDENTIALS, options.workers, options.pg_url)
        )
    for server in servers:
        server.start()
    return servers


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def ingest_all(
    servers: list[Server], dataset: SyntheticDataset, results: Results, rss_key: str, turn: int, workdir: Path
) -> int:
    """The four ingest workloads, each on its own quarter of the patients; then check and measure."""
    expected = 0
    for server in servers:
        server.reset_peak_rss()  # what start-up took (migrations, Argon2 of the admin) is not ingest
    for step, ((key, parallel), files) in enumerate(zip(INGEST, dataset.slices(len(INGEST)), strict=True)):
        if key.startswith("cstore") and not shutil.which("storescu"):
            continue
        expected += len(files)
        for server in _ordered(servers, turn + step):
            rate = ingest(server, key, files, parallel, workdir)
            results.add(server.name, key, rate.per_second)
            results.tools[key] = rate.tool
            log(f"  {server.name:20} {key:15} {rate.per_second:9.1f} instances/s")
    for server in servers:
        # Read before counting: the count's HTTP requests (a Basic login: Argon2) are not ingest.
        results.add_rss(server.name, rss_key, server.peak_rss_mb())
        log(f"  {server.name:20} peak RSS {server.peak_rss_mb():.0f} MB after ingest ({rss_key})")
        stored = stored_count(server, dataset)
        if stored != expected:
            raise RuntimeError(f"{server.name} holds {stored} instances, not {expected}")
    return turn + len(INGEST)


def _reads(
    server: Server, catalog: Catalog, cookie: str | None
) -> dict[str, tuple[list[Request], dict[str, str]]]:
    basic = {"Authorization": basic_header(server.credentials)}
    own = {"Cookie": cookie} if cookie else basic

    def get(paths: list[str]) -> list[Request]:
        return [Request(p) for p in paths]

    reads = {
        "patient_cookie": (get(catalog.patients), own),
        "study_cookie": (get(catalog.studies), own),
        "search_rest": (catalog.searches, {**basic, "Content-Type": "application/json"}),
        "instance": (get(catalog.instances), {**own, "Accept": "application/dicom"}),
    }
    if isinstance(server, IpacsServer):
        reads |= {
            "patient_basic": (get(catalog.patients), basic),
            "study_basic": (get(catalog.studies), basic),
            "search_qido": (catalog.qido, {**own, "Accept": "application/dicom+json"}),
            "ceiling": ([Request("/healthz")], {}),
        }
        reads["search_rest"] = (catalog.searches, own)
    return reads


def read_all(
    servers: list[Server], dataset: SyntheticDataset, options: Options, results: Results, turn: int
) -> None:
    catalogs: dict[str, Catalog] = {}
    plans = {}
    for server in servers:
        if isinstance(server, IpacsServer):
            catalogs[server.name] = ipacs_catalog(server, dataset)
            plans[server.name] = _reads(server, catalogs[server.name], server.session_cookie())
        else:
            assert isinstance(server, OrthancServer)
            catalogs[server.name] = orthanc_catalog(server, dataset)
            plans[server.name] = _reads(server, catalogs[server.name], None)
    for step, row in enumerate(ROWS):
        for server in _ordered(servers, turn + step):
            plan = plans[server.name].get(row.key)
            if plan is None:
                continue
            requests, headers = plan
            for seconds in (1.0, options.seconds):  # a warm-up, then the run
                rate = workloads.wrk(
                    server,
                    requests,
                    headers,
                    options.workdir,
                    connections=options.connections,
                    seconds=seconds,
                )
            value = rate.mb_per_second if row.unit == "MB/s" else rate.per_second
            results.add(server.name, row.key, value)
            results.tools[row.key] = rate.tool
            log(f"  {server.name:20} {row.key:15} {value:9.1f} {row.unit}")
    zipped = {uid for _, uid in dataset.studies()[:ZIP_STUDIES]}
    zip_content = sum(f.size for f in dataset.files if f.study_uid in zipped)
    for server in _ordered(servers, turn):
        rate = workloads.curl_download(server, catalogs[server.name].archives, options.workdir)
        # The studies' DICOM bytes per second, not the zip's: Orthanc deflates its archives.
        value = zip_content / rate.seconds / 1e6
        results.add(server.name, "zip", value)
        results.tools["zip"] = rate.tool
        log(f"  {server.name:20} {'zip':15} {value:9.1f} MB/s ({rate.mb_per_second:.1f} MB/s of zip)")


def run_round(index: int, dataset: SyntheticDataset, options: Options, results: Results) -> None:
    log(f"round {index + 1}/{options.rounds}")
    servers = start_servers(options, f"round{index}")
    try:
        turn = ingest_all(servers, dataset, results, "rounds", index, options.workdir)
        read_all(servers, dataset, options, results, turn)
    finally:
        stop_servers(servers)


def run_growth(dataset: SyntheticDataset, options: Options, results: Results) -> None:
    """C-STORE (4 associations) of `growth` times the dataset, a 1x part at a time: the peak RSS
    after the first part and after the last shows whether memory grows with what is stored."""
    log(f"growth: C-STORE of {dataset.spec.total} instances ({options.growth}x)")
    servers = start_servers(options, "growth", with_pg=False)
    try:
        for server in servers:
            server.reset_peak_rss()
        for index, part in enumerate(dataset.slices(options.growth)):
            for server in _ordered(servers, index):
                rate = workloads.storescu(server, part, 4)
                log(f"  {server.name:20} part {index + 1}: {rate.per_second:9.1f} instances/s")
            if index == 0:
                for server in servers:
                    results.add_rss(server.name, "1x", server.peak_rss_mb())
        for server in servers:
            results.add_rss(server.name, f"{options.growth}x", server.peak_rss_mb())
            log(f"  {server.name:20} peak RSS {server.peak_rss_mb():.0f} MB after {options.growth}x")
            stored = stored_count(server, dataset)
            if stored != dataset.spec.total:
                raise RuntimeError(f"{server.name} holds {stored} instances, not {dataset.spec.total}")
    finally:
        stop_servers(servers)


def _options(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DatasetSpec()
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument("--studies", type=int, default=defaults.studies)
    parser.add_argument("--series", type=int, default=defaults.series)
    parser.add_argument("--instances", type=int, default=defaults.instances)
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--columns", type=int, default=defaults.columns)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="ipacs serve --workers")
    parser.add_argument(
        "--growth", type=int, default=4, help="peak RSS at this many times the dataset (0: skip)"
    )
    parser.add_argument("--pg-url", default=None, help="also run iPACS on PostgreSQL (a server URL)")
    parser.add_argument("--no-orthanc", action="store_true", help="iPACS only")
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install Orthanc or wrk when missing"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="datasets and servers (default: a temp dir)"
    )
    parser.add_argument("--section", default="peers", help="the docs/performance.md section to replace")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the section to this file instead of docs/performance.md",
    )
    args = parser.parse_args(argv)
    spec = DatasetSpec(args.patients, args.studies, args.series, args.instances, args.rows, args.columns)
    if spec.patients < len(INGEST):
        parser.error(f"--patients must be at least {len(INGEST)} (one quarter per ingest workload)")
    orthanc = not args.no_orthanc and (
        OrthancServer.available() or (not args.no_install and OrthancServer.install())
    )
    if not args.no_orthanc and not orthanc:
        log("Orthanc is not installed and could not be: iPACS only")
    options = Options(
        spec,
        args.rounds,
        args.seconds,
        args.connections,
        args.workers,
        args.growth,
        args.pg_url,
        orthanc,
        args.workdir or Path(tempfile.mkdtemp(prefix="ipacs-peers-")),
    )
    return options, args


def main(argv: list[str]) -> None:
    options, args = _options(argv)
    if not workloads.has_wrk() and not args.no_install:
        workloads.install_wrk()
    options.workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        log(f"dataset: {options.spec.total} instances in {options.workdir}")
        dataset = generate(options.workdir / "dataset-1x", options.spec)
        results = Results()
        for index in range(options.rounds):
            run_round(index, dataset, options, results)
        if options.growth > 1:
            big = generate(
                options.workdir / f"dataset-{options.growth}x", options.spec.scaled(options.growth), "GROW"
            )
            run_growth(big, options, results)
        versions = {"iPACS": f"`ipacs serve --workers {options.workers}`"}
        if options.orthanc:
            versions["Orthanc"] = OrthancServer(options.workdir, CREDENTIALS).version()
        shown = [a if "://" not in a else "<url>" for a in argv]
        body = render(results, options, versions, " ".join(["python -m bench peers", *shown]))
        body += f"\n\nWhole run: {time.monotonic() - started:.0f} s."
        if args.output:
            args.output.write_text(body + "\n")
        else:
            from bench.report import write_section

            write_section(args.section, body)
        print(body)
    finally:
        if args.workdir is None:
            shutil.rmtree(options.workdir, ignore_errors=True)
