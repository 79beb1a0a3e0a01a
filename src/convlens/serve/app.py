"""The explorer's web app: a FastAPI app over one :class:`Explorer`.

``GET /`` is the page (plain HTML, CSS and JavaScript under ``static/``, no build
step); ``/api/...`` answers it in JSON or PNG. Every error is a 4xx with a JSON
``{"detail": message}``, never a traceback: unknown ids give 404, bad values 400,
oversized uploads 413, uploads that are not images 415.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from convlens.serve.explorer import MAX_UPLOAD_BYTES, BadRequestError, Explorer, NotFoundError

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


def _png(data: bytes) -> Response:
    """An image answer: PNG, or JPEG (an atlas of colour images) by its first bytes."""
    kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return Response(data, media_type=kind, headers={"Cache-Control": "max-age=3600"})


def create_app(explorer: Explorer) -> FastAPI:
    """The app serving ``explorer``; its routes are the explorer's methods."""
    app = FastAPI(title="convlens explorer", max_body_size=MAX_UPLOAD_BYTES + 1024 * 1024)
    app.state.explorer = explorer

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
    def image_png(image_id: str) -> Response:
        return _png(explorer.image_png(image_id))

    @app.post("/api/upload")
    def upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        return explorer.add_upload(data, file.filename or "", file.content_type)

    @app.get("/api/predict")
    def predict(image: str) -> dict[str, Any]:
        return explorer.predict(image)

    @app.get("/api/cam.png")
    def cam_png(
        image: str,
        class_index: Annotated[int, Query(alias="class")],
        method: str = "cam",
        layer: str | None = None,
    ) -> Response:
        return _png(explorer.cam_png(image, class_index, method, layer))

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

    @app.get("/api/filters.png")
    def filters_png(layer: str) -> Response:
        return _png(explorer.filters_png(layer))

    @app.get("/api/dissection/{unit}.png")  # before /{unit}, which would match "5.png"
    def dissection_strip(unit: int) -> Response:
        return _png(explorer.dissection_strip(unit))

    @app.get("/api/dissection/{unit}")
    def dissection_unit(unit: int) -> dict[str, Any]:
        return explorer.dissection_unit(unit)

    return app
