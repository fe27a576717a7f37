"""The DICOM C-STORE receiver (pynetdicom), beside the HTTP server.

The called AE title selects the project (`dicom_ae_title`); an association
to an unknown AE title is rejected. The server's own AE title answers C-ECHO
only. A C-STORE success is sent only after `Ingestor.ingest` has committed.

Each dataset is written to the store's temp area while it arrives (spool.py),
never gathered in memory, and moved into the store by a rename. An instance
larger than `max_instance_bytes` is refused with 0xA700 once its transfer ends.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from ipacs.db.engine import Database
from ipacs.dicom import spool
from ipacs.dicom import status as dimse
from ipacs.dicom.ingest import IngestBatch, Ingestor
from ipacs.dicom.storage import FileStore
from ipacs.models import Project

log = logging.getLogger("ipacs.dicom.receiver")
MAX_PDU_BYTES = 1024 * 1024


@dataclass
class _Association:
    project_id: int | None  # None: the server's own AE title (verification only)
    batch: IngestBatch


class Receiver:
    def __init__(
        self,
        database: Database,
        storage: FileStore,
        ae_title: str,
        *,
        max_instance_bytes: int | None = None,
        max_associations: int = 16,
    ) -> None:
        self.database = database
        self.storage = storage
        self.ingestor = Ingestor(database, storage)
        self.ae_title = ae_title
        self.max_instance_bytes = max_instance_bytes
        spool.install()
        self._associations: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.require_called_aet = True
        # What a sender may put in one PDU. pynetdicom reads a whole PDU into memory before it
        # hands the fragment on, and with no limit (0) a sender such as pynetdicom sends a whole
        # dataset as one PDU: a 64 MiB instance took the server from 145 to 405 MB.
        self.ae.maximum_pdu_size = MAX_PDU_BYTES
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)

    def start(self, host: str, port: int) -> int:
        """Listen (non-blocking); returns the bound port."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)
        bound: int = self._server.server_address[1]
        log.info("DICOM receiver %s listening on %s:%d", self.ae_title, host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _project_for(self, called: str) -> int | None:
        with self.database.session() as session:
            return session.scalar(select(Project.id).where(Project.dicom_ae_title == called))

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        sock = getattr(assoc.dul.socket, "socket", None)
        if sock is not None:
            # pynetdicom leaves Nagle on: every C-STORE response would wait ~40 ms
            # for the peer's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = assoc.requestor.primitive
        called = str(request.called_ae_title).strip()
        calling = str(request.calling_ae_title).strip()
        project_id = self._project_for(called)
        if project_id is None and called != self.ae_title:
            # With require_called_aet on, pynetdicom's own negotiation rejects
            # (permanent, "called AE title not recognised") when they differ.
            log.info("rejecting association from %s to unknown AE title %r", calling, called)
            assoc.acceptor.ae_title = self.ae_title
            return
        assoc.acceptor.ae_title = called
        self._prefer_the_requestors_order(assoc)
        spool.register(assoc.dul, spool.SpoolTarget(self.storage.tmp, self.max_instance_bytes))
        with self._lock:
            self._associations[id(assoc)] = _Association(
                project_id, IngestBatch(f"c-store from {calling}", channel="c-store")
            )

    def _prefer_the_requestors_order(self, assoc: Any) -> None:
        """Accept, per context, the first transfer syntax the requestor proposed that we support.

        pynetdicom picks in the acceptor's order, implicit VR first, so a sender
        holding a file in explicit VR would re-encode it and the stored file
        would no longer be the sender's. The sender's own first choice is the
        one that needs no conversion.
        """
        ours = {
            str(cx.abstract_syntax): [str(ts) for ts in cx.transfer_syntax]
            for cx in self.ae.supported_contexts
        }
        wanted: dict[str, list[str]] = {}
        for requested in assoc.requestor.primitive.presentation_context_definition_list:
            supported = ours.get(str(requested.abstract_syntax))
            if supported is None:
                continue
            order = wanted.setdefault(str(requested.abstract_syntax), [])
            order += [ts for ts in requested.transfer_syntax if ts in supported and ts not in order]
        assoc.acceptor.supported_contexts = [
            build_context(abstract, order or ours[abstract]) for abstract, order in wanted.items()
        ]

    def _on_closed(self, event: Any) -> None:
        with self._lock:
            state = self._associations.pop(id(event.assoc), None)
        if state and (state.batch.stored or state.batch.duplicates):
            log.info(
                "association %s: %d stored, %d duplicates",
                state.batch.source,
                state.batch.stored,
                state.batch.duplicates,
            )

    def _on_echo(self, event: Any) -> int:
        return dimse.SUCCESS

    def _on_store(self, event: Any) -> Dataset | int:
        with self._lock:
            state = self._associations.get(id(event.assoc))
        received = Path(event.dataset_path)
        if state is None or state.project_id is None:
            received.unlink(missing_ok=True)
            return _failure(dimse.REFUSED_NOT_AUTHORIZED, "this AE title does not accept storage")
        spooled = spool.spooled(received)
        if spooled is not None and spooled.too_large:
            received.unlink(missing_ok=True)
            log.info("C-STORE refused: %d bytes, over the limit of %d", spooled.size, spooled.limit)
            return _failure(
                dimse.OUT_OF_RESOURCES, f"Instance larger than {spooled.limit} bytes (the server's limit)"
            )
        try:
            self.ingestor.ingest_received(state.project_id, received, state.batch)
        except Exception as exc:  # every failure must become a DIMSE status
            status = dimse.status_for(exc)
            if status is None:
                log.exception("C-STORE failed unexpectedly")
                status = dimse.PROCESSING_FAILURE
            else:
                log.info("C-STORE refused (0x%04X): %s", status, exc)
            return _failure(status, str(exc))
        return dimse.SUCCESS


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    # ErrorComment is an LO: at most 64 characters.
    ds.ErrorComment = comment[:64]
    return ds
