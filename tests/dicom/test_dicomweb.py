"""DICOMweb: QIDO-RS search, WADO-RS retrieve and metadata, STOW-RS store, permissions.

The data is uploaded through the REST API (so a stored file is exactly the
bytes that were sent), and every multipart answer is split with
python-multipart's parser and each part read back with pydicom.

    Trial   user: member   viewer: viewer    studies A (P001, MR+CT) and B (P002, CT)
    Other   user: outsider                   study C (P900, sibling project)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydicom.dataset import Dataset
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from ipacs.config import Settings
from tests.dicom_factory import SeriesSpec, make_dataset, make_study, to_bytes
from tests.factories import basic, grant, make_project, make_user

API = "/api/v1.0"
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Small enough that a STOW body of a few instances is over it: DICOMweb must be exempt.
MAX_REQUEST_BYTES = 16 * 1024

# Tags, as the DICOM JSON model names them.
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
PATIENT_ID, PATIENT_NAME, STUDY_DATE = "00100020", "00100010", "00080020"
RETRIEVE_URL, MODALITIES, MODALITY = "00081190", "00080061", "00080060"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_bytes": MAX_REQUEST_BYTES})


@dataclass
class Web:
    trial: int
    other: int
    a: list[Dataset]
    b: list[Dataset]
    c: list[Dataset]
    sent: dict[str, bytes]  # SOPInstanceUID -> the bytes uploaded

    @property
    def a_uid(self) -> str:
        return str(self.a[0].StudyInstanceUID)

    @property
    def b_uid(self) -> str:
        return str(self.b[0].StudyInstanceUID)

    @property
    def c_uid(self) -> str:
        return str(self.c[0].StudyInstanceUID)


def multipart(
    datasets: list[Dataset] | list[bytes], boundary: str = "ipacs-test-boundary"
) -> tuple[str, bytes]:
    """A multipart/related body of DICOM files, and its Content-Type."""
    body = b""
    for item in datasets:
        data = item if isinstance(item, bytes) else to_bytes(item)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"{MULTIPART_DICOM}; boundary={boundary}", body


def split_multipart(response: Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart response, parsed independently of the server's writer."""
    value, options = parse_options_header(response.headers["content-type"])
    assert value == b"multipart/related"
    assert options[b"type"] == b"application/dicom"
    parts: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    data = bytearray()
    field = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        headers[field.decode().lower()] = headers.get(field.decode().lower(), "") + chunk[start:end].decode()

    def on_header_end() -> None:
        field.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        parts.append((dict(headers), bytes(data)))

    parser = MultipartParser(
        options[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(response.content)
    parser.finalize()
    return parts


def dicomweb(client: TestClient, path: str, who: str | None, **kwargs: Any) -> Response:
    client.cookies.clear()
    headers = {**(basic(who) if who else {}), **kwargs.pop("headers", {})}
    return client.request(kwargs.pop("method", "GET"), f"/dicomweb{path}", headers=headers, **kwargs)


def found(client: TestClient, path: str, who: str = "member", **params: Any) -> list[dict[str, Any]]:
    response = dicomweb(client, path, who, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    body: list[dict[str, Any]] = response.json()
    return body


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    return [r[tag]["Value"][0] for r in results]


def patient_ids(client: TestClient, **params: Any) -> set[str]:
    return set(values(found(client, "/studies", **params), PATIENT_ID))


def invalid(response: Response, status: int, code: str = "invalid_request") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert (body["success"], body["error"]) == (False, code)
    return body


def upload(client: TestClient, project_id: int, datasets: list[Dataset]) -> dict[str, bytes]:
    content_type, body = multipart(datasets)
    client.cookies.clear()
    response = client.post(
        f"{API}/projects/{project_id}/dicom",
        content=body,
        headers={**basic("admin"), "Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == len(datasets), response.text
    return {str(ds.SOPInstanceUID): to_bytes(ds) for ds in datasets}


def _with(datasets: list[Dataset], **attributes: Any) -> list[Dataset]:
    for ds in datasets:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return datasets


@pytest.fixture
def web(client: TestClient, db: Session, settings: Settings) -> Web:
    admin = make_user(db, settings, "admin", is_admin=True)
    member, viewer, outsider = (make_user(db, settings, n) for n in ("member", "viewer", "outsider"))
    trial = make_project(db, admin, "Trial")
    other = make_project(db, admin, "Other")
    grant(db, trial, member, "user")
    grant(db, trial, viewer, "viewer")
    grant(db, other, outsider, "user")
    db.commit()
    a = make_study("P001")  # MR series 1, CT series 2, three instances each
    b = _with(
        make_study("P002", [SeriesSpec("CT", 1, 2)]),
        PatientName="Smith^John",
        AccessionNumber="ACC2",
        StudyDate="20240315",
        StudyDescription="Chest",
    )
    c = _with(make_study("P900", [SeriesSpec("MR", 1, 1)]), StudyDate="20231201")
    sent = upload(client, trial.id, a) | upload(client, trial.id, b) | upload(client, other.id, c)
    return Web(trial.id, other.id, a, b, c, sent)


# --- QIDO-RS ---------------------------------------------------------------------------------------


def test_search_studies_returns_dicom_json_with_what_a_viewer_needs(client: TestClient, web: Web) -> None:
    results = found(client, "/studies")
    assert values(results, STUDY_UID) == [web.b_uid, web.a_uid]  # newest StudyDate first
    a = results[1]
    assert a[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert a[PATIENT_ID] == {"vr": "LO", "Value": ["P001"]}
    assert a["00100030"] == {"vr": "DA", "Value": ["19800101"]}
    assert a["00100040"] == {"vr": "CS", "Value": ["F"]}
    assert a[STUDY_DATE] == {"vr": "DA", "Value": ["20240102"]}
    assert a["00080030"] == {"vr": "TM", "Value": ["101500"]}
    assert a["00080050"] == {"vr": "SH", "Value": ["ACC1"]}
    assert a["00081030"] == {"vr": "LO", "Value": ["Brain"]}
    assert a[MODALITIES] == {"vr": "CS", "Value": ["MR", "CT"]}
    assert a["00201206"] == {"vr": "IS", "Value": [2]}
    assert a["00201208"] == {"vr": "IS", "Value": [6]}
    assert a["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert a[RETRIEVE_URL] == {"vr": "UR", "Value": [f"http://testserver/dicomweb/studies/{web.a_uid}"]}
    assert list(a) == sorted(a)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientID": "P001"}, {"P001"}),
        ({"PatientID": "P00*"}, {"P001", "P002"}),
        ({"PatientID": "p001"}, set()),  # an exact PatientID is case-sensitive
        ({"PatientID": "P90*"}, set()),  # the sibling project's patient
        ({"PatientName": "Doe^Jane"}, {"P001"}),
        ({"PatientName": "doe^jane"}, {"P001"}),
        ({"PatientName": "doe*"}, {"P001"}),
        ({"PatientName": "*JOHN"}, {"P002"}),
        ({"PatientName": "D?e^*"}, {"P001"}),
        ({"PatientName": "*"}, {"P001", "P002"}),
        ({"PatientName": "Doe"}, set()),  # no wildcard: the whole name must match
        ({"PatientName": "*%*"}, set()),  # SQL's wildcards are literal text
        ({"PatientName": "*_*"}, set()),
        ({"StudyDate": "20240102"}, {"P001"}),
        ({"StudyDate": "20240101-20240201"}, {"P001"}),
        ({"StudyDate": "20240102-20240315"}, {"P001", "P002"}),
        ({"StudyDate": "20240201-"}, {"P002"}),
        ({"StudyDate": "-20240201"}, {"P001"}),
        ({"StudyDate": "20250101-"}, set()),
        ({"ModalitiesInStudy": "CT"}, {"P001", "P002"}),
        ({"ModalitiesInStudy": "MR"}, {"P001"}),
        ({"ModalitiesInStudy": "mr"}, {"P001"}),
        ({"ModalitiesInStudy": "PT,MR"}, {"P001"}),
        ({"ModalitiesInStudy": "PT\\MR"}, {"P001"}),
        ({"ModalitiesInStudy": "M"}, set()),
        ({"AccessionNumber": "ACC2"}, {"P002"}),
        ({"AccessionNumber": "ACC*"}, {"P001", "P002"}),
        ({"StudyDescription": "*rain"}, {"P001"}),
        ({"00100020": "P002"}, {"P002"}),
        ({"00100010": "smith*"}, {"P002"}),
        ({"PatientSex": "F"}, {"P001", "P002"}),
        ({"PatientBirthDate": "19800101"}, {"P001", "P002"}),
        ({"PatientID": "P001", "StudyDate": "20240315"}, set()),  # keys combine with AND
        ({"fuzzymatching": "false", "PatientID": "P002"}, {"P002"}),
    ],
)
def test_study_match_keys(client: TestClient, web: Web, params: dict[str, str], expected: set[str]) -> None:
    assert patient_ids(client, **params) == expected


def test_study_instance_uid_list_matching(client: TestClient, web: Web) -> None:
    assert patient_ids(client, StudyInstanceUID=web.a_uid) == {"P001"}
    assert patient_ids(client, StudyInstanceUID=f"{web.a_uid},{web.b_uid}") == {"P001", "P002"}
    assert patient_ids(client, StudyInstanceUID=f"{web.a_uid}\\{web.b_uid}") == {"P001", "P002"}
    assert patient_ids(client, **{"0020000D": web.b_uid}) == {"P002"}
    assert patient_ids(client, StudyInstanceUID=web.c_uid) == set()  # not readable: not found


def test_limit_and_offset_page_in_a_stable_order(client: TestClient, web: Web) -> None:
    first = dicomweb(client, "/studies", "member", params={"limit": 1})
    assert values(first.json(), STUDY_UID) == [web.b_uid]
    assert first.headers["X-Total-Count"] == "2"
    assert "There are additional results" in first.headers["Warning"]
    second = dicomweb(client, "/studies", "member", params={"limit": 1, "offset": 1})
    assert values(second.json(), STUDY_UID) == [web.a_uid]
    assert "Warning" not in second.headers
    assert found(client, "/studies", offset=2) == []
    assert len(found(client, "/studies", limit=5000)) == 2  # more than the maximum: capped, not refused


def test_no_match_is_200_with_an_empty_array(client: TestClient, web: Web) -> None:
    response = dicomweb(client, "/studies", "member", params={"PatientID": "nobody"})
    assert (response.status_code, response.json()) == (200, [])
    assert response.headers["X-Total-Count"] == "0"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"StudyDate": "2024"}, "StudyDate"),
        ({"StudyDate": "20241301"}, "StudyDate"),
        ({"StudyDate": "20240301-20240101"}, "StudyDate"),
        ({"StudyDate": "-"}, "StudyDate"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"PatientNmae": "Doe*"}, "PatientNmae"),
        ({"includefield": "NoSuchAttribute"}, "includefield"),
        ({"offset": str(10**20)}, "offset"),
        ({"PatientID": "P\x00"}, "PatientID"),
    ],
)
def test_bad_queries_are_400_naming_the_key(
    client: TestClient, web: Web, params: dict[str, str], field: str
) -> None:
    body = invalid(dicomweb(client, "/studies", "member", params=params), 400)
    assert body["details"][0]["field"] == field


def test_duplicate_match_key_is_400(client: TestClient, web: Web) -> None:
    response = dicomweb(client, "/studies?PatientID=P001&00100020=P002", "member")
    invalid(response, 400)


def test_unindexed_attribute_is_ignored_with_a_warning(client: TestClient, web: Web) -> None:
    response = dicomweb(client, "/studies", "member", params={"ReferringPhysicianName": "X*", "_": "17"})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert (
        response.headers["Warning"] == '299 ipacs "The following parameters are not supported: '
        'ReferringPhysicianName"'
    )


def test_includefield_reads_attributes_the_index_lacks_from_the_files(client: TestClient, web: Web) -> None:
    study = found(client, "/studies", PatientID="P001", includefield="SOPClassUID,00280010")[0]
    assert study["00280010"] == {"vr": "US", "Value": [8]}  # Rows, from the study's first instance
    assert study["00080016"]["Value"] == [str(web.a[0].SOPClassUID)]
    series = found(client, f"/studies/{web.a_uid}/series", includefield="SeriesDescription")
    assert values(series, "0008103E") == ["MR series 1", "CT series 2"]
    instances = found(client, "/instances", includefield="all", PatientID="P002")
    assert len(instances) == 2 and "00280011" not in instances[0]


def test_search_series_of_a_study(client: TestClient, web: Web) -> None:
    results = found(client, f"/studies/{web.a_uid}/series")
    assert values(results, MODALITY) == ["MR", "CT"]
    mr = results[0]
    assert mr[SERIES_UID]["Value"] == [str(web.a[0].SeriesInstanceUID)]
    assert mr["00200011"] == {"vr": "IS", "Value": [1]}
    assert mr["0008103E"] == {"vr": "LO", "Value": ["MR series 1"]}
    assert mr["00201209"] == {"vr": "IS", "Value": [3]}
    assert mr[STUDY_UID]["Value"] == [web.a_uid]
    assert mr[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicomweb/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}"
    ]
    assert PATIENT_NAME not in mr  # the study is in the path: its attributes are not repeated
    assert values(found(client, f"/studies/{web.a_uid}/series", Modality="CT"), MODALITY) == ["CT"]
    assert found(client, f"/studies/{web.a_uid}/series", SeriesNumber=2)[0][MODALITY]["Value"] == ["CT"]
    one = found(client, f"/studies/{web.a_uid}/series", SeriesInstanceUID=str(web.a[3].SeriesInstanceUID))
    assert values(one, MODALITY) == ["CT"]


def test_search_all_series_carries_study_attributes(client: TestClient, web: Web) -> None:
    results = found(client, "/series", Modality="CT")
    assert values(results, PATIENT_ID) == ["P002", "P001"]
    assert results[0][PATIENT_NAME]["Value"] == [{"Alphabetic": "Smith^John"}]
    assert values(found(client, "/series", PatientName="doe*"), MODALITY) == ["MR", "CT"]
    assert found(client, "/series", Modality="MR", StudyDate="20240315") == []


def test_search_instances(client: TestClient, web: Web) -> None:
    series_uid = str(web.a[0].SeriesInstanceUID)
    results = found(client, f"/studies/{web.a_uid}/series/{series_uid}/instances")
    assert values(results, SOP_UID) == [str(ds.SOPInstanceUID) for ds in web.a[:3]]
    first = results[0]
    assert first["00200013"] == {"vr": "IS", "Value": [1]}
    assert first["00080016"]["Value"] == [str(web.a[0].SOPClassUID)]
    assert first["00083002"]["Value"] == [EXPLICIT_LE]
    assert first[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicomweb/studies/{web.a_uid}/series/{series_uid}/instances/{web.a[0].SOPInstanceUID}"
    ]
    assert len(found(client, f"/studies/{web.a_uid}/instances")) == 6
    assert len(found(client, f"/studies/{web.a_uid}/instances", InstanceNumber=2)) == 2
    sop = str(web.b[1].SOPInstanceUID)
    assert values(found(client, "/instances", SOPInstanceUID=sop), PATIENT_ID) == ["P002"]
    assert found(client, "/instances", SOPInstanceUID=str(web.c[0].SOPInstanceUID)) == []


def test_search_below_an_unknown_study_or_series_is_404(client: TestClient, web: Web) -> None:
    invalid(dicomweb(client, "/studies/1.2.3.4/series", "member"), 404, "not_found")
    invalid(dicomweb(client, f"/studies/{web.a_uid}/series/1.2.3/instances", "member"), 404, "not_found")
    # A series of another study is not found under this one.
    other_series = str(web.b[0].SeriesInstanceUID)
    invalid(
        dicomweb(client, f"/studies/{web.a_uid}/series/{other_series}/instances", "member"), 404, "not_found"
    )


def test_search_refuses_an_accept_it_cannot_serve(client: TestClient, web: Web) -> None:
    response = dicomweb(client, "/studies", "member", headers={"Accept": "application/dicom+xml"})
    invalid(response, 406)
    ok = dicomweb(client, "/studies", "member", headers={"Accept": "application/json"})
    assert ok.status_code == 200


# --- WADO-RS ---------------------------------------------------------------------------------------


def test_retrieve_study_is_multipart_of_the_files_exactly_as_uploaded(client: TestClient, web: Web) -> None:
    response = dicomweb(client, f"/studies/{web.a_uid}", "member")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MULTIPART_DICOM)
    parts = split_multipart(response)
    assert len(parts) == 6
    for headers, data in parts:
        assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == web.a_uid
        assert data == web.sent[str(ds.SOPInstanceUID)]
    # Series then instance order.
    uids = [str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for _, d in parts]
    assert uids == [str(ds.SOPInstanceUID) for ds in web.a]


def test_retrieve_series_and_instance(client: TestClient, web: Web) -> None:
    series_uid = str(web.a[3].SeriesInstanceUID)
    parts = split_multipart(dicomweb(client, f"/studies/{web.a_uid}/series/{series_uid}", "member"))
    assert [d for _, d in parts] == [web.sent[str(ds.SOPInstanceUID)] for ds in web.a[3:]]
    sop = str(web.a[4].SOPInstanceUID)
    path = f"/studies/{web.a_uid}/series/{series_uid}/instances/{sop}"
    parts = split_multipart(dicomweb(client, path, "member"))
    assert [d for _, d in parts] == [web.sent[sop]]
    single = dicomweb(client, path, "member", headers={"Accept": "application/dicom"})
    assert single.status_code == 200
    assert single.headers["content-type"] == "application/dicom"
    assert single.content == web.sent[sop]
    # A study or series is always multipart, even with a single instance in it.
    for path in (f"/studies/{web.c_uid}", f"/studies/{web.c_uid}/series/{web.c[0].SeriesInstanceUID}"):
        invalid(dicomweb(client, path, "outsider", headers={"Accept": "application/dicom"}), 406)


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (MULTIPART_DICOM, 200),
        ("multipart/related; type=application/dicom", 200),
        (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}', 200),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', 200),
        ("*/*", 200),
        ("multipart/related", 200),
        ('application/dicom+json, multipart/related; type="application/dicom"; q=0.5', 200),
        ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', 406),
        ('multipart/related; type="application/octet-stream"', 406),
        ("application/dicom", 406),  # a study is several files: one body cannot hold them
        ("application/zip", 406),
        ('multipart/related; type="application/dicom"; q=0', 406),
    ],
)
def test_retrieve_accept_negotiation(client: TestClient, web: Web, accept: str, status: int) -> None:
    response = dicomweb(client, f"/studies/{web.b_uid}", "member", headers={"Accept": accept})
    assert response.status_code == status, response.text
    if status == 406:
        assert response.json()["error"] == "invalid_request"
    else:
        assert len(split_multipart(response)) == 2


def test_metadata_at_study_series_and_instance_level(client: TestClient, web: Web) -> None:
    study = found(client, f"/studies/{web.a_uid}/metadata")
    assert len(study) == 6
    assert {m[SOP_UID]["Value"][0] for m in study} == {str(ds.SOPInstanceUID) for ds in web.a}
    first = study[0]
    assert first[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert first["00280010"] == {"vr": "US", "Value": [8]}
    assert first["00083002"]["Value"] == [EXPLICIT_LE]
    assert "7FE00010" not in first  # no pixel data
    series_uid = str(web.a[0].SeriesInstanceUID)
    assert len(found(client, f"/studies/{web.a_uid}/series/{series_uid}/metadata")) == 3
    sop = str(web.a[1].SOPInstanceUID)
    one = found(client, f"/studies/{web.a_uid}/series/{series_uid}/instances/{sop}/metadata")
    assert values(one, SOP_UID) == [sop]
    assert values(one, "00200013") == [2]


def test_metadata_leaves_bulk_data_out(client: TestClient, web: Web) -> None:
    ds = make_dataset(patient_id="P001")
    ds.EncapsulatedDocument = b"%PDF" + b"\x00" * 4000  # OB, over the bulk data threshold
    ds.add_new(0x00091010, "OB", b"\x01\x02")  # small binary stays inline
    upload(client, web.trial, [ds])
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/metadata"
    )
    metadata = found(client, path)[0]
    assert "00420011" not in metadata
    assert metadata["00091010"] == {"vr": "OB", "InlineBinary": "AQI="}


def test_wado_uri_serves_one_file_as_stored(client: TestClient, web: Web) -> None:
    ds = web.a[2]
    params = {
        "requestType": "WADO",
        "studyUID": web.a_uid,
        "seriesUID": str(ds.SeriesInstanceUID),
        "objectUID": str(ds.SOPInstanceUID),
        "contentType": "application/dicom",
    }
    response = dicomweb(client, "/wado", "viewer", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == web.sent[str(ds.SOPInstanceUID)]
    scoped = dicomweb(client, f"/projects/{web.trial}/wado", "viewer", params=params)
    assert scoped.content == response.content
    invalid(dicomweb(client, "/wado", "outsider", params=params), 404, "not_found")
    invalid(dicomweb(client, "/wado", "viewer", params={**params, "contentType": "image/jpeg"}), 406)
    jpeg_syntax = {**params, "transferSyntax": "1.2.840.10008.1.2.4.50"}
    invalid(dicomweb(client, "/wado", "viewer", params=jpeg_syntax), 406)
    no_object = {k: v for k, v in params.items() if k != "objectUID"}
    assert (
        invalid(dicomweb(client, "/wado", "viewer", params=no_object), 400)["details"][0]["field"]
        == "objectUID"
    )


def test_retrieve_unknown_things_is_404(client: TestClient, web: Web) -> None:
    for path in (
        "/studies/1.2.3",
        f"/studies/{web.a_uid}/series/1.2.3",
        f"/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}/instances/1.2.3",
        f"/studies/{web.a_uid}/series/{web.b[0].SeriesInstanceUID}",  # a series of another study
        "/studies/1.2.3/metadata",
        "/studies/1.2.%00",  # a NUL in a UID: nothing can have it, on either database
        f"/studies/{web.a_uid}/series/%00/instances",
        f"/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}/instances/{'9' * 65}",
    ):
        invalid(dicomweb(client, path, "member"), 404, "not_found")


# --- STOW-RS ---------------------------------------------------------------------------------------


def stow(
    client: TestClient, project_id: int, parts: list[Dataset] | list[bytes], who: str = "member"
) -> Response:
    content_type, body = multipart(parts)
    return dicomweb(
        client,
        f"/projects/{project_id}/studies",
        who,
        method="POST",
        content=body,
        headers={"Content-Type": content_type, "Accept": DICOM_JSON},
    )


def test_stow_stores_every_instance_and_they_come_back_identical(client: TestClient, web: Web) -> None:
    study = make_study("P050", [SeriesSpec("MR", 1, 3)])
    for ds in study:  # each instance larger than MAX_REQUEST_BYTES / 3
        ds.PixelData = bytes(range(256)) * 32
        ds.Rows, ds.Columns = 64, 64
    response = stow(client, web.trial, study)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    body = response.json()
    uid = str(study[0].StudyInstanceUID)
    root = f"http://testserver/dicomweb/projects/{web.trial}"
    assert body[RETRIEVE_URL]["Value"] == [f"{root}/studies/{uid}"]
    assert "00081198" not in body
    referenced = body["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [str(ds.SOPInstanceUID) for ds in study]
    assert referenced[0]["00081150"]["Value"] == [str(study[0].SOPClassUID)]
    assert referenced[0][RETRIEVE_URL]["Value"] == [
        f"{root}/studies/{uid}/series/{study[0].SeriesInstanceUID}/instances/{study[0].SOPInstanceUID}"
    ]
    parts = split_multipart(dicomweb(client, f"/projects/{web.trial}/studies/{uid}", "viewer"))
    assert [d for _, d in parts] == [to_bytes(ds) for ds in study]
    # The same study is found through the REST API: the one ingest path made it.
    client.cookies.clear()
    patients = client.get(
        f"{API}/projects/{web.trial}/patients", params={"patient_id": "P050"}, headers=basic("member")
    )
    assert len(patients.json()) == 1


def test_stow_with_some_failures_is_202_and_names_them(client: TestClient, web: Web) -> None:
    good = make_study("P051", [SeriesSpec("CT", 1, 2)])
    missing = make_dataset(patient_id="P051", omit=("PatientID",))
    conflicting = web.a[0].copy()
    conflicting.PatientName = "Changed^Bytes"
    response = stow(client, web.trial, [good[0], missing, b"not dicom at all", conflicting, good[1]])
    assert response.status_code == 202, response.text
    body = response.json()
    stored = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
    assert stored == [str(good[0].SOPInstanceUID), str(good[1].SOPInstanceUID)]
    failed = body["00081198"]["Value"]
    assert len(failed) == 3
    missing_item, junk_item, conflict_item = failed
    assert missing_item["00081155"]["Value"] == [str(missing.SOPInstanceUID)]
    assert missing_item["00081197"] == {"vr": "US", "Value": [0xC000]}
    assert "PatientID" in missing_item["00000902"]["Value"][0]
    assert junk_item["00081197"]["Value"] == [0xC000]
    assert "00081155" in junk_item and "Value" not in junk_item["00081155"]
    assert conflict_item["00081155"]["Value"] == [str(web.a[0].SOPInstanceUID)]
    assert conflict_item["00081197"]["Value"] == [0x0111]
    # The original is kept.
    path = f"/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}/instances/{web.a[0].SOPInstanceUID}"
    single = dicomweb(client, path, "member", headers={"Accept": "application/dicom"})
    assert single.content == web.sent[str(web.a[0].SOPInstanceUID)]


def test_stow_all_failed_is_409_and_a_resend_is_success(client: TestClient, web: Web) -> None:
    response = stow(client, web.trial, [b"junk", make_dataset(omit=("StudyInstanceUID",))])
    assert response.status_code == 409, response.text
    assert len(response.json()["00081198"]["Value"]) == 2
    again = stow(client, web.trial, web.b)  # identical bytes: stored already, nothing changes
    assert again.status_code == 200
    assert len(again.json()["00081199"]["Value"]) == 2
    assert len(found(client, f"/studies/{web.b_uid}/instances")) == 2


def test_stow_refusals(client: TestClient, web: Web) -> None:
    ds = make_dataset(patient_id="P060")
    content_type, body = multipart([ds])
    post = {"method": "POST", "content": body}
    # No project in the path: the rule is explained.
    no_project = invalid(
        dicomweb(client, "/studies", "member", headers={"Content-Type": content_type}, **post), 400
    )
    assert "/dicomweb/projects/{project_id}/studies" in no_project["message"]
    # A viewer may not store; an outsider does not see the project; nobody anonymous.
    invalid(stow(client, web.trial, [ds], who="viewer"), 403, "forbidden")
    invalid(stow(client, web.trial, [ds], who="outsider"), 404, "not_found")
    anonymous = dicomweb(
        client, f"/projects/{web.trial}/studies", None, headers={"Content-Type": content_type}, **post
    )
    invalid(anonymous, 401, "unauthorized")
    # Not multipart, an unsupported part type, an unsupported answer type, no parts.
    path = f"/projects/{web.trial}/studies"
    single = dicomweb(client, path, "member", headers={"Content-Type": "application/dicom"}, **post)
    invalid(single, 415)
    json_parts = content_type.replace("application/dicom", "application/dicom+json")
    invalid(dicomweb(client, path, "member", headers={"Content-Type": json_parts}, **post), 415)
    xml = {"Content-Type": content_type, "Accept": "application/dicom+xml"}
    invalid(dicomweb(client, path, "member", headers=xml, **post), 406)
    empty = {"method": "POST", "content": b"--b--\r\n"}
    invalid(
        dicomweb(client, path, "member", headers={"Content-Type": f"{MULTIPART_DICOM}; boundary=b"}, **empty),
        400,
    )
    # A body that is not multipart at all, or is cut short: 400, nothing stored.
    boundary_b = {"Content-Type": f"{MULTIPART_DICOM}; boundary=b"}
    for broken in (b"garbage", b"--b\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(ds)[:300]):
        invalid(dicomweb(client, path, "member", headers=boundary_b, method="POST", content=broken), 400)
    assert patient_ids(client, PatientID="P060") == set()


# --- Permissions and authentication ----------------------------------------------------------------


def test_sibling_project_user_sees_only_its_own(client: TestClient, web: Web) -> None:
    assert patient_ids_as(client, "outsider") == {"P900"}
    for path in (
        f"/studies/{web.a_uid}",
        f"/studies/{web.a_uid}/metadata",
        f"/studies/{web.a_uid}/series",
        f"/studies/{web.a_uid}/instances",
        f"/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}",
        f"/studies/{web.a_uid}/series/{web.a[0].SeriesInstanceUID}/instances/{web.a[0].SOPInstanceUID}",
        f"/projects/{web.trial}/studies",
    ):
        invalid(dicomweb(client, path, "outsider"), 404, "not_found")
    assert found(client, "/series", "outsider", PatientID="P001") == []
    assert found(client, "/instances", "outsider", PatientID="P00*") == []
    # And the other way round.
    invalid(dicomweb(client, f"/studies/{web.c_uid}", "member"), 404, "not_found")


def patient_ids_as(client: TestClient, who: str) -> set[str]:
    return set(values(found(client, "/studies", who), PATIENT_ID))


def test_administrator_sees_everything_and_project_roots_scope(client: TestClient, web: Web) -> None:
    assert patient_ids_as(client, "admin") == {"P001", "P002", "P900"}
    scoped = found(client, f"/projects/{web.other}/studies", "admin")
    assert values(scoped, PATIENT_ID) == ["P900"]
    assert scoped[0][RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicomweb/projects/{web.other}/studies/{web.c_uid}"
    ]
    # A study outside the root's project is not found through it.
    invalid(dicomweb(client, f"/projects/{web.other}/studies/{web.a_uid}", "admin"), 404, "not_found")
    assert len(found(client, f"/projects/{web.trial}/studies", "viewer")) == 2
    invalid(dicomweb(client, "/projects/987654/studies", "admin"), 404, "not_found")


@pytest.mark.parametrize(
    "path", ["/studies", "/series", "/instances", "/studies/1.2.3", "/studies/1.2.3/metadata"]
)
def test_anonymous_is_401(client: TestClient, web: Web, path: str) -> None:
    response = dicomweb(client, path, None)
    invalid(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="iPACS"'


def test_session_cookie_works_as_for_the_rest_api(client: TestClient, web: Web) -> None:
    client.cookies.clear()
    login = client.get("/dicomweb/studies", headers=basic("viewer"))
    assert login.status_code == 200
    assert "ipacs_session" in client.cookies
    again = client.get(f"/dicomweb/studies/{web.a_uid}/series")
    assert again.status_code == 200
    assert len(again.json()) == 2
