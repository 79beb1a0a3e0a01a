"""The explorer's web app: a FastAPI app over one :class:`Explorer`.

``GET /`` is the page (plain HTML, CSS and JavaScript under ``static/``, no build
step); ``/api/...`` answers it in JSON or PNG. Every error is a 4xx with a JSON
``{"detail": message}``, never a traceback: unknown ids give 404, bad values 400,
oversized uploads 413, uploads that are not images 415, a foreign Host 421 and a
cross-origin change 403. Long work (``/api/jobs/...``) starts a job that the page
polls for progress and cancels with ``DELETE``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from convlens.interpret.maps import registry
from convlens.serve.catalog import MAX_UPLOAD_BYTES, BadRequestError, NotFoundError
from convlens.serve.explorer import Explorer, MapQuery

STATIC = Path(__file__).parent / "static"


class AblateRequest(BaseModel):
    image: str
    layer: str | None = None
    units: list[int]
    mode: str = "activation"


class FewestRequest(BaseModel):
    image: str
    layer: str | None = None
    mode: str = "activation"


class MapRequest(BaseModel):
    image: str
    class_index: int = Field(alias="class")
    method: str
    layer: str | None = None
    sign: str | None = None
    clip: float = 2.0


class VisualizeRequest(BaseModel):
    layer: str | None = None
    unit: int


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _png(data: bytes, request: Request) -> Response:
    """An image answer: PNG, or JPEG (an atlas of colour images) by its first bytes.

    Cached by content, not by URL: the ETag is a hash of the bytes and the browser asks
    again every time (``no-cache``), getting 304 when nothing changed. An id that names
    another picture after a restart (``test:0`` of another model or folder) therefore
    never shows the old one."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return Response(data, media_type=kind, headers=headers)


def host_name(value: str) -> str:
    """The name part of a Host header or an origin's netloc: ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SameSiteOnly:
    """ASGI middleware: a foreign Host gets 421, a cross-origin change 403 (see
    :func:`create_app`). Plain ASGI, so a request costs a header lookup, not a task."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = None
        if host_name(host) not in self.allowed:
            name = host_name(host)[:60]
            refusal = JSONResponse(
                {"detail": f"host {name!r} is not allowed; start convlens serve with "
                 f"--allow-host {name or 'NAME'} to serve it"},
                status_code=421,
            )  # fmt: skip
        elif scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            site = headers.get("sec-fetch-site", "same-origin")
            if (origin is not None and urlsplit(origin).netloc.lower() != host.lower()) or (
                site not in ("same-origin", "none")
            ):
                refusal = JSONResponse(
                    {"detail": "cross-origin request refused: the explorer answers changes "
                     "only from its own page"},
                    status_code=403,
                )  # fmt: skip
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(explorer: Explorer, allow_hosts: Sequence[str] = ()) -> FastAPI:
    """The app serving ``explorer``; its routes are the explorer's methods.

    Every request must name an allowed host (loopback names, plus ``allow_hosts``):
    a page on another site that rebinds its DNS name to this machine is refused. A
    request that changes state (POST) from a browser must come from this server's own
    origin; there is no CORS, so other sites cannot read any answer either."""
    app = FastAPI(title="convlens explorer", max_body_size=MAX_UPLOAD_BYTES + 1024 * 1024)
    app.state.explorer = explorer
    allowed = {h.lower() for h in (*LOOPBACK_HOSTS, *allow_hosts)}

    app.add_middleware(SameSiteOnly, allowed=frozenset(allowed))

    @app.exception_handler(NotFoundError)
    def not_found(_r: Request, e: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(BadRequestError)
    def bad_request(_r: Request, e: BadRequestError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(ValueError)
    def bad_value(_r: Request, e: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return explorer.info()

    @app.get("/api/images")
    def images(offset: int = 0, limit: int = 48) -> dict[str, Any]:
        return explorer.list_images(offset, limit)

    @app.get("/api/images/{image_id}.png")
    def image_png(image_id: str, request: Request) -> Response:
        return _png(explorer.image_png(image_id), request)

    @app.post("/api/upload")
    def upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        return explorer.add_upload(data, file.filename or "", file.content_type)

    @app.get("/api/predict")
    def predict(image: str) -> dict[str, Any]:
        return explorer.predict(image)

    @app.get("/api/cam.png")
    def cam_png(
        request: Request,
        image: str,
        class_index: Annotated[int, Query(alias="class")],
        method: str = registry.DEFAULT_METHOD,
        layer: str | None = None,
        sign: str | None = None,
        clip: float = 2.0,
    ) -> Response:
        query = MapQuery(image, class_index, method, layer, sign, clip)
        return _png(explorer.cam_png(query), request)

    @app.get("/api/units")
    def units(image: str, layer: str | None = None, top: int = 12) -> dict[str, Any]:
        return explorer.unit_maps(image, layer, top)

    @app.post("/api/ablate")
    def ablate(req: AblateRequest) -> dict[str, Any]:
        result: dict[str, Any] = explorer.ablate(req.image, req.layer, req.units, req.mode)
        return result

    @app.post("/api/fewest")
    def fewest(req: FewestRequest) -> dict[str, Any]:
        return explorer.fewest(req.image, req.layer, req.mode)

    @app.post("/api/jobs/fewest")
    def start_fewest(req: FewestRequest) -> dict[str, Any]:
        return explorer.start_fewest(req.image, req.layer, req.mode)

    @app.post("/api/jobs/map")
    def start_map(req: MapRequest) -> dict[str, Any]:
        return explorer.start_map(
            MapQuery(req.image, req.class_index, req.method, req.layer, req.sign, req.clip)
        )

    @app.post("/api/jobs/visualize")
    def start_visualization(req: VisualizeRequest) -> dict[str, Any]:
        return explorer.start_visualization(req.layer, req.unit)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return explorer.job(job_id)

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return explorer.cancel_job(job_id)

    @app.get("/api/filters.png")
    def filters_png(layer: str, request: Request) -> Response:
        return _png(explorer.filters_png(layer), request)

    @app.get("/api/dissection/{unit}.png")  # before /{unit}, which would match "5.png"
    def dissection_strip(unit: int, request: Request) -> Response:
        return _png(explorer.dissection_strip(unit), request)

    @app.get("/api/dissection/{unit}")
    def dissection_unit(unit: int) -> dict[str, Any]:
        return explorer.dissection_unit(unit)

    @app.get("/api/concepts")
    def concepts(image: str) -> dict[str, Any]:
        return explorer.concept_maps(image)

    @app.get("/api/concepts/{tag}/{concept}.png")
    def concept_card(tag: str, concept: int, request: Request) -> Response:
        return _png(explorer.concept_card(tag, concept), request)

    return app


__all__ = [
    "LOOPBACK_HOSTS",
    "SAFE_METHODS",
    "STATIC",
    "AblateRequest",
    "FewestRequest",
    "MapRequest",
    "SameSiteOnly",
    "VisualizeRequest",
    "create_app",
    "host_name",
]
