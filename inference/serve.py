"""A web page and an HTTP API around one loaded colorizer (`cli.py serve`).

    GET  /                 the page (inference/static/index.html: one file, inline CSS and JS, works offline)
    GET  /api/health       {"status": "ok", "checkpoint", "loss", "temperature", "size", "max_mb", "max_pixels"}
    POST /api/colorize     body: the image file's bytes (or multipart/form-data with one file field);
                           query: ?temperature=T (optional) -> image/png at the input's size and lightness
                           (and alpha), the same pixels `cli.py colorize` writes. Headers X-Temperature,
                           X-Seconds (decode + colorize + PNG) and X-Image-Size.

Bad input gets a 4xx with {"detail": "one line"} and the server keeps serving: an empty body (400), more than
max_mb (413, from Content-Length before anything is read, else while reading), more than max_pixels (413, from
the image header before any pixel is decoded: a 40 KB PNG can declare 50,000 x 50,000 pixels), not an image
(415), a damaged image (400), a bad temperature (422), another HTTP method (405).

Concurrency: every request's decode, inference and PNG encoding run on one worker thread, one at a time.
Torch already spreads one image over every core, so a second image at once would not finish sooner; one at a
time also bounds the memory to one photo's, and the model is never used from two threads. The event loop
stays free meanwhile, so /api/health and uploads still answer while a photo is being colorized.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from fastapi import FastAPI, Query, Request        # extra [web]; cli.py says so when it is missing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from inference.colorize import ColorizeConfig, colorize_image
from inference.inputs import READ_ERRORS
from inference.outputs import load_alpha
from pipeline.images import load_rgb, sniff_format

PAGE = Path(__file__).with_name("static") / "index.html"


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: str = ""
    host: str = "127.0.0.1"          # localhost only unless asked: the page has no authentication
    port: int = 8000
    max_mb: float = 25.0             # largest upload, in MiB
    max_pixels: int = 40_000_000     # largest width x height accepted (a 40 MP photo); checked from the header
    size: int = 256                  # side of the square L the network sees
    temperature: float | None = None   # for requests that name none (None: the colorizer's default)
    device: str = "auto"
    runtime: str = "auto"            # auto | torch | onnx (inference.colorizer.load_colorizer)


class UploadError(Exception):
    """A request the client has to fix: HTTP status and a one-line message."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class _TooLarge(Exception):
    pass


def _limited(receive, limit: int):
    """An ASGI receive that stops a request body once it passes `limit` bytes (a chunked upload has no
    Content-Length to check first)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message
    return wrapped


async def read_upload(request, max_mb: float) -> bytes:
    """The uploaded file's bytes from a raw body or a multipart form (first file field); at most max_mb MiB."""
    max_bytes, mb = int(max_mb * 2**20), f"{max_mb:g} MB"
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise UploadError(413, f"upload of {int(length) / 2**20:.2f} MB is over the limit of {mb}")
    limited = Request(request.scope, _limited(request.receive, max_bytes))
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await limited.form(max_files=1, max_fields=10)
            files = [v for v in form.values() if isinstance(v, UploadFile)]
            if not files:
                raise UploadError(400, "the form has no file field; send the image as a file")
            data = await files[0].read()
            await form.close()
        else:
            data = await limited.body()
    except _TooLarge:
        raise UploadError(413, f"upload is over the limit of {mb}") from None
    if not data:
        raise UploadError(400, "empty upload: no image bytes received")
    return data


def check_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(W, H) from the image header, without decoding pixels; UploadError when the file is no image we read
    or declares more than max_pixels."""
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise UploadError(415, f"not an image: first bytes {data[:8].hex()} are no JPEG/PNG/BMP/GIF/TIFF/WebP")
    try:
        with Image.open(io.BytesIO(data)) as im:          # parses the header only
            W, H = im.size
    except Image.DecompressionBombError as e:             # Pillow's own limit, 2x MAX_IMAGE_PIXELS
        raise UploadError(413, f"image is too large to decode: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if "truncated" in str(e).lower():
            raise UploadError(400, f"truncated: the {fmt} file ends inside its header") from None
        # OpenCV could still decode some of these, but it cannot tell their size first: refuse
        raise UploadError(400, f"{fmt} whose header cannot be read, so its size cannot be checked ({e})") from None
    if W * H > max_pixels:
        raise UploadError(413, f"image of {W} x {H} = {W * H / 1e6:.1f} MP is over the limit of "
                               f"{max_pixels / 1e6:g} MP")
    return W, H


def colorize_bytes(colorizer, data: bytes, size: int, temperature: float | None) -> bytes:
    """Image file bytes -> PNG bytes: the same decode, colorize_image (alpha kept) and pixels as
    `cli.py colorize --format png`, with its strip-wise full-resolution rebuild (bounded memory)."""
    with tempfile.TemporaryDirectory(prefix="colorfast-serve-") as d:   # load_rgb reads files: decode once, by content
        path = Path(d) / "upload"
        path.write_bytes(data)
        try:
            rgb = load_rgb(path)
        except READ_ERRORS as e:
            raise UploadError(400, f"cannot decode the image: {e}") from None
        alpha = load_alpha(path, rgb.shape[:2])
    img = colorize_image(colorizer, rgb, alpha, ColorizeConfig(size=size, temperature=temperature, format="png"))
    ok, png = cv2.imencode(".png", img[..., [2, 1, 0, 3][: img.shape[2]]])       # OpenCV's channel order
    assert ok, "PNG encoding failed"
    return png.tobytes()


def create_app(colorizer, cfg: ServeConfig):
    """The FastAPI app serving `colorizer` (loaded once, shared by every request)."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="colorfast", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    page = PAGE.read_text(encoding="utf-8")
    health = {"status": "ok", "checkpoint": Path(colorizer.source).name, "loss": colorizer.loss,
              "temperature": colorizer.temperature_for(cfg.temperature), "decoding": colorizer.describe(cfg.temperature),
              "size": cfg.size, "max_mb": cfg.max_mb, "max_pixels": cfg.max_pixels}

    @app.exception_handler(UploadError)
    async def _upload_error(request, e: UploadError):
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request, e: RequestValidationError):       # one line, not FastAPI's error list
        msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:]) or 'request'}: {err['msg']}" for err in e.errors())
        return JSONResponse({"detail": msg}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/api/health")
    def api_health():
        return health

    @app.post("/api/colorize", responses={200: {"content": {"image/png": {}}}})
    async def api_colorize(request: Request, temperature: float | None = Query(None, gt=0, le=10)):
        data = await read_upload(request, cfg.max_mb)
        W, H = check_header(data, cfg.max_pixels)
        t = colorizer.temperature_for(cfg.temperature if temperature is None else temperature)
        start = time.perf_counter()
        png = await asyncio.get_running_loop().run_in_executor(worker, colorize_bytes, colorizer, data, cfg.size, t)
        return Response(png, media_type="image/png", headers={
            "X-Temperature": f"{t:g}", "X-Seconds": f"{time.perf_counter() - start:.3f}",
            "X-Image-Size": f"{W}x{H}", "Cache-Control": "no-store"})

    return app


def run(cfg: ServeConfig) -> None:
    """Load the checkpoint once and serve until Ctrl-C."""
    import uvicorn
    from inference.colorizer import load_colorizer
    colorizer = load_colorizer(cfg.checkpoint, device=cfg.device, runtime=cfg.runtime)
    app = create_app(colorizer, cfg)
    print(f"colorfast: {cfg.checkpoint} ({colorizer.loss}; {colorizer.describe(cfg.temperature)}) on "
          f"http://{cfg.host}:{cfg.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=os.environ.get("COLORFAST_LOG", "warning"))
