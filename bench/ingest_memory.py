"""Peak memory of `ipacs serve` while it ingests one large study (issue 6: <= 300 MB for 1 GB).

    python -m bench.ingest_memory                  # 1 GiB, both study shapes, --workers 1 and 2, SQLite
    python -m bench ingest-memory --pg-url postgresql+psycopg://...   # and on PostgreSQL too
    python -m bench ingest-memory --megabytes 64 --workers 1 --output /tmp/section.md

The study is one patient and one StudyInstanceUID of about `--megabytes` MiB of
16-bit noise pixels (12 significant bits), in two shapes: `slices`, single-frame
512x512 images of 512 KiB each (a CT series), and `multiframe`, a few instances
of `--frames` 512x512 frames each (256 MiB at 512 frames: a tomosynthesis or a
4D series). Files are written to a temp dir with their pixel data streamed
frame by frame, never whole in memory, and removed at the end.

For each server size (`--workers`), database, shape and channel a fresh `ipacs
serve` (own data directory, Argon2 at its default 64 MiB) ingests the study
once: `cstore`, dcmtk's storescu over one association (TCP_NODELAY=1);
`pynetdicom`, a pynetdicom sender over one association, which fills every PDU
the receiver allows (storescu sends small ones); or `zip`, the study as one zip
(deflate level 1) posted to `/projects/{id}/dicom` as `application/zip`,
streamed from disk, with the Basic credentials of a `user` of the project.

Memory is each server process's VmHWM (the kernel's high-water mark of its
resident memory), summed over the server's processes: the supervisor and its
workers, the resource tracker. It is read once after start-up and set-up, reset
(`5` to /proc/PID/clear_refs) just before the ingest, and read again when the
ingest is acknowledged, before the check that counts what was stored (whose
requests are not ingest). "Peak" is the larger of the two reads, per process:
the server's whole life up to the end of the ingest. A sampler also sums VmRSS
every 0.1 s: the sum of per-process peaks can only overstate what was resident
at any one moment.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from bench.peers.ipacs import IpacsServer
from bench.peers.servers import Credentials, status_kib

SECTION = "ingest-memory"
TARGET_MB = 300
ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2
MIB = 1024 * 1024
CREDENTIALS = Credentials("ingester", secrets.token_urlsafe(12))


# ---- the study on disk


@dataclass(frozen=True)
class Shape:
    name: str
    frames: int  # per instance

    @property
    def instance_bytes(self) -> int:
        return self.frames * FRAME_BYTES

    def describe(self, count: int) -> str:
        what = "single-frame" if self.frames == 1 else f"{self.frames:,} frames"
        instances = "1 instance" if count == 1 else f"{count:,} instances"
        return f"`{self.name}`: {instances} of {what} 512x512 16-bit ({_mib(self.instance_bytes)} each)"


@dataclass
class StudyFiles:
    root: Path
    shape: Shape
    patient_id: str
    study_uid: str
    paths: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


def _mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB" if size >= MIB else f"{size / 1024:,.0f} KiB"


def _noise_frame() -> bytes:
    noise = random.Random(20261205)
    values = [noise.getrandbits(12) for _ in range(ROWS * COLUMNS)]
    return struct.pack(f"<{len(values)}H", *values)


def _header(shape: Shape, patient_id: str, study_uid: str, series_uid: str, number: int) -> Dataset:
    sop_class = MRImageStorage if shape.frames == 1 else MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = "Bench^Large"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20261205"
    ds.StudyTime = "093000"
    ds.AccessionNumber = "LARGE1"
    ds.StudyDescription = f"Large study ({shape.name})"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Modality = "MR" if shape.frames == 1 else "OT"
    ds.InstanceNumber = number
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    if shape.frames > 1:
        ds.NumberOfFrames = shape.frames
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def write_instance(path: Path, header: Dataset, frames: int, frame: bytes) -> None:
    """The header through pydicom, then Pixel Data (the last element) streamed frame by frame."""
    with path.open("wb") as out:
        pydicom.dcmwrite(out, header, enforce_file_format=True)
        # (7FE0,0010) OW in explicit VR little endian: tag, VR, two reserved bytes, 32-bit length.
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * len(frame)))
        for n in range(frames):
            shift = (n * 2 * 1031) % len(frame)  # frames differ, cheaply
            out.write(frame[shift:])
            out.write(frame[:shift])


def generate_study(root: Path, shape: Shape, megabytes: int) -> StudyFiles:
    count = max(1, round(megabytes * MIB / shape.instance_bytes))
    study = StudyFiles(root, shape, f"LARGE-{shape.name.upper()}", generate_uid())
    root.mkdir(parents=True, exist_ok=True)
    series_uid, frame = generate_uid(), _noise_frame()
    for number in range(1, count + 1):
        path = root / f"{number:05d}.dcm"
        write_instance(
            path, _header(shape, study.patient_id, study.study_uid, series_uid, number), shape.frames, frame
        )
        study.paths.append(path)
    return study


def zip_study(study: StudyFiles, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for file in study.paths:
            zf.write(file, arcname=f"{study.shape.name}/{file.name}")
    return path


# ---- memory of the server's processes


class RssSampler:
    """The largest sum of VmRSS over the server's processes, sampled every `interval` seconds."""

    def __init__(self, server: IpacsServer, interval: float = 0.1) -> None:
        self.server = server
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(status_kib(pid, "VmRSS") for pid in self.server.pids())
            self.peak_kib = max(self.peak_kib, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def high_water_marks(server: IpacsServer) -> dict[int, int]:
    return {pid: status_kib(pid, "VmHWM") for pid in server.pids()}


# ---- one ingest on a fresh server


@dataclass
class Measurement:
    database: str
    workers: int
    shape: str
    channel: str
    instances: int
    size: int
    seconds: float
    processes: int
    before_mb: float  # VmRSS summed, just before the ingest
    ingest_peak_mb: float  # VmHWM summed, reset just before the ingest
    lifetime_peak_mb: float  # per process the larger of start-up's and the ingest's, summed
    sampled_peak_mb: float  # the largest simultaneous sum of VmRSS seen during the ingest

    @property
    def met(self) -> bool:
        return self.lifetime_peak_mb <= TARGET_MB


def _storescu(server: IpacsServer, study: StudyFiles) -> None:
    command = ["storescu", "--aetitle", "BENCHSCU", "--call", server.ae_title, "127.0.0.1"]
    command += [str(server.dicom_port), *map(str, study.paths)]
    env = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk leaves Nagle on without it
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode or "Failed" in done.stderr:
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-2000:]}")


def _pynetdicom(server: IpacsServer, study: StudyFiles) -> None:
    # The files as they are on disk, in fragments as large as the receiver allows.
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="BENCHPYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    for sop_class in (MRImageStorage, MultiFrameGrayscaleWordSecondaryCaptureImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    if not assoc.is_established:
        raise RuntimeError("pynetdicom: association not established")
    try:
        for path in study.paths:
            status = assoc.send_c_store(path)
            if status.get("Status") != 0:
                raise RuntimeError(f"pynetdicom C-STORE of {path.name}: {status}")
    finally:
        assoc.release()


def _upload_zip(server: IpacsServer, study: StudyFiles, archive: Path) -> None:
    url = f"{server.base_url}{server.api}/projects/{server.project_id}/dicom"
    auth = (CREDENTIALS.username, CREDENTIALS.password)
    with archive.open("rb") as body:  # httpx streams a file object in chunks, with its Content-Length
        r = httpx.post(
            url, content=body, headers={"Content-Type": "application/zip"}, auth=auth, timeout=None
        )
    summary = r.json()
    if r.status_code != 200 or summary["stored"] != len(study.paths) or summary["failed"]:
        raise RuntimeError(f"zip upload answered {r.status_code}: {r.text[:2000]}")


def _stored_instances(server: IpacsServer, study: StudyFiles) -> int:
    project = f"{server.api}/projects/{server.project_id}"
    (patient,) = server.get_json(f"{project}/patients?patient_id={study.patient_id}")
    studies = server.get_json(f"{project}/patients/{patient['id']}/studies")
    return sum(s["instance_count"] for s in studies if s["study_instance_uid"] == study.study_uid)


def measure(
    workdir: Path, study: StudyFiles, channel: str, workers: int, pg_url: str | None, archive: Path | None
) -> Measurement:
    server = IpacsServer(workdir, CREDENTIALS, workers, pg_url)
    try:
        server.start()
        startup = high_water_marks(server)
        server.reset_peak_rss()
        before = server.rss_mb()
        started = time.monotonic()
        with RssSampler(server) as sampler:
            if channel == "cstore":
                _storescu(server, study)
            elif channel == "pynetdicom":
                _pynetdicom(server, study)
            else:
                assert archive is not None
                _upload_zip(server, study, archive)
        seconds = time.monotonic() - started
        ingest = high_water_marks(server)  # before the check below: its requests are not ingest
        stored = _stored_instances(server, study)
        if stored != len(study.paths):
            raise RuntimeError(f"{stored} instances stored, not {len(study.paths)}")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    lifetime = {pid: max(kib, startup.get(pid, 0)) for pid, kib in ingest.items()}
    return Measurement(
        database="PostgreSQL" if pg_url else "SQLite",
        workers=workers,
        shape=study.shape.name,
        channel=channel,
        instances=len(study.paths),
        size=study.size,
        seconds=seconds,
        processes=len(ingest),
        before_mb=before,
        ingest_peak_mb=sum(ingest.values()) / 1024,
        lifetime_peak_mb=sum(lifetime.values()) / 1024,
        sampled_peak_mb=sampler.peak_kib / 1024,
    )


# ---- the run and its section


@dataclass
class Options:
    megabytes: int
    frames: int
    shapes: list[str]
    channels: list[str]
    workers: list[int]
    pg_url: str | None
    workdir: Path


CHANNELS = {
    "cstore": "C-STORE (storescu, 1 association)",
    "pynetdicom": "C-STORE (pynetdicom, 1 association)",
    "zip": "HTTP upload of one zip",
}


def run(options: Options, log: bool = True) -> tuple[list[Measurement], dict[str, str]]:
    shapes = {"slices": Shape("slices", 1), "multiframe": Shape("multiframe", options.frames)}
    databases: list[str | None] = [None, *([options.pg_url] if options.pg_url else [])]
    results: list[Measurement] = []
    described: dict[str, str] = {}
    for name in options.shapes:
        data = options.workdir / "study"
        study = generate_study(data, shapes[name], options.megabytes)
        described[name] = study.shape.describe(len(study.paths))
        archive = zip_study(study, options.workdir / "study.zip") if "zip" in options.channels else None
        try:
            for workers in options.workers:
                for pg_url in databases:
                    for channel in options.channels:
                        result = measure(options.workdir / "server", study, channel, workers, pg_url, archive)
                        results.append(result)
                        if log:
                            print(_log_line(result), flush=True)
        finally:
            shutil.rmtree(data, ignore_errors=True)
            if archive is not None:
                archive.unlink(missing_ok=True)
    return results, described


def _log_line(m: Measurement) -> str:
    return (
        f"{m.database:10} --workers {m.workers} {m.shape:10} {m.channel:6} {m.instances:5} instances "
        f"{m.seconds:6.1f} s  before {m.before_mb:4.0f} MB  ingest peak {m.ingest_peak_mb:4.0f} MB  "
        f"peak {m.lifetime_peak_mb:4.0f} MB  sampled {m.sampled_peak_mb:4.0f} MB"
    )


def render(results: list[Measurement], described: dict[str, str], command: str, megabytes: int) -> str:
    lines = [
        "## Peak memory while ingesting one large study",
        "",
        f"Command: `{command}`",
        "",
        f"One patient, one study of {megabytes:,} MiB of pixel data, in two shapes: "
        + "; ".join(described.values())
        + ". Each row is a fresh `ipacs serve --workers N` (Argon2 at its default 64 MiB) ingesting the"
        " whole study once. Memory is summed over the server's processes: VmRSS just before the ingest;"
        " the peak since start (VmHWM, the target's measure); the peak of the ingest alone (VmHWM reset"
        " when it starts); the largest simultaneous VmRSS sum sampled every 0.1 s.",
        "",
        "| database | server | study | ingest | instances | seconds | MB/s | processes | RSS before |"
        " peak since start | peak of the ingest | sampled peak | ≤ 300 MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in results:
        lines.append(
            f"| {m.database} | `--workers {m.workers}` | {m.shape} | {CHANNELS[m.channel]} |"
            f" {m.instances:,} | {m.seconds:.1f} | {m.size / 1e6 / m.seconds:.1f} | {m.processes} |"
            f" {m.before_mb:.0f} MB |"
            f" {m.lifetime_peak_mb:.0f} MB | {m.ingest_peak_mb:.0f} MB | {m.sampled_peak_mb:.0f} MB |"
            f" {'yes' if m.met else '**no**'} |"
        )
    lines += [
        "",
        "Clients:",
        "",
        "```",
        "TCP_NODELAY=1 storescu --aetitle BENCHSCU --call <AE> 127.0.0.1 <port> <files...>",
        "pynetdicom AE.associate(...).send_c_store(<file>) per file, STORE_SEND_CHUNKED_DATASET",
        "POST /api/v1.0/projects/<id>/dicom  Content-Type: application/zip  (httpx, streamed from disk)",
        "```",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--megabytes", type=int, default=1024, help="size of the study in MiB")
    parser.add_argument("--frames", type=int, default=512, help="frames per instance of the multiframe shape")
    parser.add_argument("--shapes", default="slices,multiframe")
    parser.add_argument("--channels", default="cstore,pynetdicom,zip")
    parser.add_argument("--workers", default="1,2", help="server processes to measure, comma-separated")
    parser.add_argument("--pg-url", default=None, help="also measure on a database created on this server")
    parser.add_argument("--workdir", type=Path, default=None, help="where the study is generated (removed)")
    parser.add_argument("--section", default=SECTION, help="the docs/performance.md section to replace")
    parser.add_argument("--output", type=Path, default=None, help="write the section here instead")
    args = parser.parse_args(argv)
    shapes = args.shapes.split(",")
    channels = args.channels.split(",")
    if not set(shapes) <= {"slices", "multiframe"} or not set(channels) <= set(CHANNELS):
        parser.error("--shapes takes slices,multiframe and --channels cstore,pynetdicom,zip")
    if "cstore" in channels and not shutil.which("storescu"):
        parser.error("storescu (Debian's dcmtk) is needed for the cstore channel")
    options = Options(
        megabytes=args.megabytes,
        frames=args.frames,
        shapes=shapes,
        channels=channels,
        workers=[int(w) for w in args.workers.split(",")],
        pg_url=args.pg_url,
        workdir=args.workdir or Path(tempfile.gettempdir()),
    )
    return options, args


def main(argv: list[str] | None = None) -> None:
    options, args = parse(argv)
    command = "python -m bench.ingest_memory" + "".join(
        f" {a}" if not a.startswith("postgresql") else " <url>" for a in (argv or [])
    )
    with tempfile.TemporaryDirectory(prefix="ipacs-ingest-memory-", dir=options.workdir) as tmp:
        options.workdir = Path(tmp)
        results, described = run(options)
    body = render(results, described, command, options.megabytes)
    if args.output:
        args.output.write_text(body + "\n")
    else:
        from bench.report import write_section

        write_section(args.section, body)
    missed = [m for m in results if not m.met]
    print(f"{len(results) - len(missed)} of {len(results)} runs within {TARGET_MB} MB")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
