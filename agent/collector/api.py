"""The collector's HTTP API (Starlette): `POST /v1/ingest` and `GET /v1/health`.

Ingest (docs/events.md, "Errors returned by the collector"): the bearer token is checked first
(constant-time compare), then the body size (16 MiB), then MessagePack and the event schema
(ingest.py), and the batch is stored in one transaction (storage.py). Every refusal answers
JSON `{"error": "..."}` and logs one line naming the client, the status and the reason; nothing
of a refused request is stored. Store outages answer 503, so agents keep the batch and retry.

Health needs no token: `{"status": "ok", "schema_version": N, "store": "sqlite"}`, or 503 when
the store does not answer.
"""

from __future__ import annotations

import hmac
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.collector.errors import StoreError, StoreUnavailable
from agent.collector.ingest import MAX_BODY_BYTES, IngestError, parse_batch
from agent.collector.storage import Store

# An over-limit body is still read (and discarded) up to this many times the limit, so the
# client gets its 413 instead of a reset connection; beyond that the connection is dropped.
_DRAIN_FACTOR = 4


def create_app(store: Store, token: str, *, max_body_bytes: int = MAX_BODY_BYTES,
               logger: logging.Logger | None = None) -> Starlette:
    """The ASGI app serving `store`, accepting requests that carry `Authorization: Bearer token`.

    Raises ValueError for an empty token (the collector never runs unauthenticated).
    """
    if not token:
        raise ValueError("an ingest token is required")
    log = logger or logging.getLogger("pgwarden.collector")
    expected = token.encode("utf-8")

    def refuse(request: Request, status: int, message: str) -> JSONResponse:
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        log.warning("rejected %s %s from %s: %d %s", request.method, request.url.path, peer,
                    status, message)
        return JSONResponse({"error": message}, status_code=status)

    async def ingest(request: Request) -> Response:
        header = request.headers.get("authorization")
        if header is None:
            return refuse(request, 401, "missing 'Authorization: Bearer <token>' header")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return refuse(request, 401, "Authorization must use the Bearer scheme")
        if not hmac.compare_digest(presented.strip().encode("utf-8"), expected):
            return refuse(request, 401, "wrong bearer token")
        body = bytearray()
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received <= max_body_bytes:
                body += chunk
            elif received > _DRAIN_FACTOR * max_body_bytes:
                break
        if received > max_body_bytes:
            return refuse(request, 413, f"body is larger than the limit of {max_body_bytes} "
                          f"bytes ({max_body_bytes / 2**20:g} MiB); send smaller batches")
        try:
            batch = await run_in_threadpool(parse_batch, bytes(body))
        except IngestError as e:
            return refuse(request, e.status, str(e))
        try:
            result = await run_in_threadpool(store.write_batch, batch)
        except StoreUnavailable as e:
            return refuse(request, 503, f"store unavailable, retry later: {e}")
        except StoreError as e:
            return refuse(request, 500, f"store error: {e}")
        if result.duplicate:
            log.info("batch %d of agent %s was already stored (duplicate)", batch.batch_seq,
                     batch.agent.agent_id)
        return JSONResponse({"accepted": result.accepted, "duplicate": result.duplicate})

    async def health(request: Request) -> Response:
        try:
            await run_in_threadpool(store.ping)
        except StoreError as e:
            return JSONResponse({"status": "unavailable", "error": str(e)}, status_code=503)
        return JSONResponse({"status": "ok", "schema_version": store.schema_version,
                             "store": store.kind})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return Starlette(
        routes=[Route("/v1/ingest", ingest, methods=["POST"]),
                Route("/v1/health", health, methods=["GET"])],
        exception_handlers={HTTPException: http_error},
    )
