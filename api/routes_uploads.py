"""``POST /api/v1/imagery/uploads``: a GeoTIFF streamed into the imagery inbox, for the
``detect-changes`` process (big orthophotos do not belong in base64 JSON).

The body is the file itself (``Content-Type: image/tiff``), written to disk as it
arrives (never held in memory), counted against ``GRIDGOV_IMAGERY_UPLOAD_MAX_BYTES``
(413 as soon as it passes), then checked (a GeoTIFF with a CRS; 400 otherwise, and the
file is gone) and filed under the SHA-256 of its bytes. The answer's ``href`` is what
the process takes as ``before``, ``after`` or a DSM. Officers only: it writes to the
server's disk.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import principal
from api.faults import BodyTooLarge
from api.problems import PROBLEM, problem

router = APIRouter()

UPLOADS_PATH = "/api/v1/imagery/uploads"
ACCEPTED = ("image/tiff", "application/octet-stream")


@router.post(
    UPLOADS_PATH, status_code=201, response_model=None,
    summary="Upload a GeoTIFF for change detection (officers)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "image/tiff": {"schema": {"type": "string", "format": "binary"}}}}},
    responses={
        201: {"description": "stored: its href for detect-changes, size, SHA-256, CRS, "
                             "size in pixels, bands"},
        400: {"description": "empty, not a GeoTIFF, or no CRS", "content": {PROBLEM: {}}},
        401: {"description": "no officer token", "content": {PROBLEM: {}}},
        403: {"description": "the token's role is too low", "content": {PROBLEM: {}}},
        413: {"description": "over GRIDGOV_IMAGERY_UPLOAD_MAX_BYTES", "content": {PROBLEM: {}}},
        415: {"description": "not image/tiff", "content": {PROBLEM: {}}},
    },
)
async def upload(request: Request) -> JSONResponse:
    from api.ogc.detect_changes import UPLOADS, adopt, upload_target

    await principal(request, "officer")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ACCEPTED:
        return problem(415, "Unsupported media type",
                       f"send the GeoTIFF itself as the body, Content-Type image/tiff, not "
                       f"{media or 'nothing'}", instance=request.url.path)
    settings = request.app.state.settings
    limit = settings.imagery_upload_max_bytes
    inbox = settings.imagery_inbox
    tmp = await run_in_threadpool(upload_target, inbox)
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                digest.update(chunk)
                await run_in_threadpool(out.write, chunk)
        if size == 0:
            return problem(400, "Invalid input", "the body is empty: send the GeoTIFF",
                           instance=request.url.path)
        path, info = await run_in_threadpool(adopt, tmp, digest.hexdigest(), inbox, "upload")
    finally:
        tmp.unlink(missing_ok=True)
    body: dict[str, Any] = {"href": f"{UPLOADS}/{path.name}", "bytes": size,
                            "sha256": digest.hexdigest(), **info}
    return JSONResponse(body, status_code=201)
