"""The Batches deployment: owner of the job store (files, batches, line results, and the
Responses API's stored responses).

One replica per graph (it owns the SQLite file, as the Collections replica owns its
collections). It runs no request itself: the ingress replicas' batch runners
(``serve/services/batch_runner.py``) claim lines from it, send each through the same
services and dispatcher as an interactive request, and store the answer here. So a
batch line is routed, woken, admitted and falls back exactly as a chat request does,
and a graph killed mid-batch resumes where the store says it was.

Every store call runs in a worker thread (it touches the disk); the typed errors a
caller should see are returned as values, so they cross the handle intact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any, Optional

from deployments.batches.database import DatabaseUnavailable
from deployments.batches.input import read_input
from deployments.batches.responses import ResponseStore
from deployments.batches.store import JobStore, StoreConflict
from serve.kernel.batch_protocol import BatchCreateRequest, file_object
from serve.kernel.config import BatchSpec
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.errors import BadRequest, NotFound, Unavailable, errors_as_values
from serve.kernel.log_filters import quiet_probes
from serve.kernel.settings import configured_postgres_url

logger = logging.getLogger("ray.serve")


class Batches:
    """The job store behind the Files and Batches API.

    Args:
        spec: The profile's ``batch`` block (limits, runner timeout).
        data_dir: The graph's data directory; the store lives in ``<data_dir>/jobs``.
    """

    def __init__(self, spec: BatchSpec, data_dir: str) -> None:
        quiet_probes()
        keep_to_control_plane()
        self._spec = spec
        where = configured_postgres_url() if spec.backend == "postgres" else Path(data_dir) / "jobs"
        self._store = JobStore(where, runner_timeout_s=spec.runner_timeout_s)
        self._responses = ResponseStore(where)

    async def check_health(self) -> None:
        return None

    async def readiness(self) -> None:
        """Ready while the job store answers (the PostgreSQL server, on that backend)."""
        await self._run(self._store.ping)

    async def _run(self, fn, *args, **kwargs) -> Any:
        """``fn`` in a worker thread; a database that does not answer is a 503 to retry."""
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except DatabaseUnavailable as exc:
            raise Unavailable(str(exc), code="store_unavailable", headers={"Retry-After": "5"}) from None

    # ------------------------------------------------------------------ files
    @errors_as_values
    async def create_file(self, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
        if purpose != "batch":
            raise BadRequest(f"purpose {purpose!r} is not supported; upload files for batches with purpose 'batch'",
                             param="purpose", code="invalid_purpose")
        return file_object(await self._run(self._store.put_file, purpose, filename, content))

    @errors_as_values
    async def get_file(self, file_id: str) -> dict[str, Any]:
        return file_object(await self._file(file_id))

    @errors_as_values
    async def file_content(self, file_id: str) -> bytes:
        await self._file(file_id)
        return await self._run(self._store.file_content, file_id)

    @errors_as_values
    async def list_files(self, purpose: Optional[str], after: Optional[str], limit: int) -> dict[str, Any]:
        rows, more = await self._run(self._store.list_files, purpose=purpose, after=after, limit=limit)
        return _page([file_object(row) for row in rows], more)

    @errors_as_values
    async def delete_file(self, file_id: str) -> dict[str, Any]:
        await self._file(file_id)
        await self._run(self._store.delete_file, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    async def _file(self, file_id: str) -> dict[str, Any]:
        row = await self._run(self._store.get_file, file_id)
        if row is None:
            raise NotFound(f"no file with id {file_id!r}", param="file_id", code="file_not_found")
        return row

    # ---------------------------------------------------------------- batches
    @errors_as_values
    async def create_batch(self, request: BatchCreateRequest) -> dict[str, Any]:
        """Read the input file and start the batch: its lines wait for the runners."""
        row = await self._run(self._store.get_file, request.input_file_id)
        if row is None:
            raise NotFound(f"no file with id {request.input_file_id!r}", param="input_file_id", code="file_not_found")
        if row["purpose"] != "batch":
            raise BadRequest(f"file {request.input_file_id!r} was not uploaded with purpose 'batch'",
                             param="input_file_id", code="invalid_input_file")
        content = await self._run(self._store.file_content, request.input_file_id)
        try:
            lines, refused = await self._run(read_input, content, endpoint=request.endpoint,
                                             max_lines=self._spec.max_batch_lines,
                                             max_line_bytes=self._spec.max_line_bytes)
        except ValueError as exc:
            raise BadRequest(str(exc), param="input_file_id", code="invalid_input_file") from None
        batch = await self._run(self._store.create_batch, endpoint=request.endpoint,
                                input_file_id=request.input_file_id, completion_window=request.completion_window,
                                metadata=request.metadata, lines=lines, refused=refused)
        logger.info("batch %s: %d lines to run, %d refused", batch["id"], len(lines), len(refused))
        return batch

    @errors_as_values
    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        batch = await self._run(self._store.get_batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch with id {batch_id!r}", param="batch_id", code="batch_not_found")
        return batch

    @errors_as_values
    async def list_batches(self, after: Optional[str], limit: int) -> dict[str, Any]:
        batches, more = await self._run(self._store.list_batches, after=after, limit=limit)
        return _page(batches, more)

    @errors_as_values
    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        try:
            batch = await self._run(self._store.cancel, batch_id)
        except StoreConflict as exc:
            raise BadRequest(str(exc), param="batch_id", code="batch_not_cancellable") from None
        if batch is None:
            raise NotFound(f"no batch with id {batch_id!r}", param="batch_id", code="batch_not_found")
        return batch

    # ------------------------------------------------------------------ lines
    async def claim(self, runner: str, capacity: int, held: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """Lines for a runner to run (see :meth:`JobStore.claim`)."""
        return await self._run(self._store.claim, runner, capacity, held)

    async def release(self, runner: str, batch_id: str, index: int) -> None:
        """A line given back for later (see :meth:`JobStore.release`)."""
        await self._run(self._store.release, runner, batch_id, index)

    async def complete(self, runner: str, batch_id: str, index: int, ok: bool, result: dict[str, Any]) -> bool:
        """A line's answer, stored once (see :meth:`JobStore.complete`)."""
        return await self._run(self._store.complete, runner, batch_id, index, ok=ok, result=result)

    # ------------------------------------------------------ stored responses
    async def put_response(self, record: dict[str, Any]) -> None:
        """Store a Responses API response (see :class:`ResponseStore`); durable on return."""
        await self._run(self._responses.put, record)

    async def get_response(self, response_id: str, owner: str) -> Optional[dict[str, Any]]:
        """A stored response's record, or None (unknown id, or another key's)."""
        return await self._run(self._responses.get, response_id, owner)

    async def delete_response(self, response_id: str, owner: str) -> bool:
        return await self._run(self._responses.delete, response_id, owner)


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
