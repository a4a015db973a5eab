"""A web page and an HTTP API around one loaded colorizer (`cli.py serve`).

    GET  /                 the page (colorfast/static/index.html: one file, inline CSS and JS, works offline)
    GET  /api/health       {"status": "ok", "checkpoint", "loss", "temperature", "size", "max_mb", "max_pixels",
                            "queue", "guided"}
    POST /api/colorize     body: the image file's bytes (or multipart/form-data with one file field);
                           query: ?temperature=T (optional) -> image/png at the input's size and lightness
                           (and alpha), the same pixels `cli.py colorize` writes. Headers X-Temperature,
                           X-Seconds (decode + colorize + PNG, not the wait), X-Queue-Seconds (the wait for
                           its turn), X-Image-Size and X-Hints (how many were applied).
                           Guided checkpoints (siggraph17): a `hints` form field (or ?hints=) holding the JSON
                           of `cli.py colorize --hints` (colorfast/hints.py): [{"x": px, "y": px, "color":
                           "#rrggbb" | "ab": [a, b], "size": px}], positions in the uploaded photo's pixels.
    POST /api/suggest      the same upload (and hints) with ?x=&y=[&k=5] (photo pixels) -> {"x", "y", "colors":
                           [{"ab": [a, b], "hex": "#rrggbb", "p": probability}, ...]}: the colours the class
                           head finds likely at that point given the hints, most likely first, as the original
                           GUI's suggested-colour palette (hex: that ab at the photo's lightness there).
                           A POST with the photo rather than GET ?x=&y=: the server keeps nothing between
                           requests (no session, no photo cache to bound or to leak between users).

Bad input gets a 4xx with {"detail": "one line"} and the server keeps serving: an empty body (400), more than
max_mb (413, from Content-Length before anything is read, else while reading), more than max_pixels (413, from
the image header before any pixel is decoded: a 40 KB PNG can declare 50,000 x 50,000 pixels), not an image
(415), a damaged image (400), a temperature that is not a finite number in 0.01..100 (422), hints for a
checkpoint that takes none, more than MAX_HINTS or hints that do not parse or fall outside the photo (400), a
suggestion point outside the photo (422), an upload that
does not arrive within body_timeout (408, connection closed), another HTTP method (405), another site's page
or a foreign Host name (403, colorfast/serve_guard.py).

Concurrency (colorfast/serve_queue.py): every request's decode, inference and PNG encoding run on one worker
thread, one at a time. Torch already spreads one image over every core, so a second image at once would not
finish sooner; one at a time also bounds the memory to one photo's, and the model is never used from two
threads. At most `queue` requests wait behind it, uploads included; more get 503 with Retry-After before their
body is read. Uploads are streamed to a temporary file, so a waiting request costs disk, not memory. A client
that hangs up is not worked for: its request leaves the line, or its job stops at the next stage. The event
loop stays free meanwhile, so /api/health and uploads still answer while a photo is being colorized.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, Query, Request        # extra [web]; cli.py says so when it is missing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from colorfast.photos import ColorizeConfig, colorize_image
from colorfast.net_input import net_input_rgb
from colorfast.hints import check_inside, hint_planes, net_pixel, parse_hints
from colorfast.inputs import READ_ERRORS
from colorfast.outputs import load_alpha
from colorfast.serve_guard import HostOriginGuard, parse_origin, protocol_with_header_timeout
from colorfast.serve_queue import Busy, ClientGone, ColorizeQueue, Job, log, watch_disconnect
from pipeline.images import lab_to_rgb, load_rgb, rgb_to_lab, sniff_format
from trainer.decode import check_temperature

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_HINTS = 256                  # per request: a person places a few dozen; each costs a patch on the hint planes
MAX_SUGGESTIONS = 16             # ?k= (the original GUI shows 5)


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
    runtime: str = "auto"            # auto | torch | onnx (colorfast.loader.load_colorizer)
    queue: int = 4                   # requests waiting behind the one being colorized; more: 503
    body_timeout: float = 60.0       # seconds for a whole upload to arrive (408)
    header_timeout: float = 10.0     # seconds for a request's headers to arrive (the connection is closed)
    allow_origin: tuple[str, ...] = ()   # other origins (and Host names) allowed to use the API

    def __post_init__(self):
        """ValueError in one line for a setting that cannot work (the CLI prints it and does not start)."""
        if self.temperature is not None:
            check_temperature(self.temperature, "--temperature")
        if self.queue < 0 or self.body_timeout <= 0 or self.header_timeout <= 0:
            raise ValueError("--queue must be >= 0 and the timeouts > 0")
        for origin in self.allow_origin:
            parse_origin(origin)


class UploadError(Exception):
    """A request the client has to fix: HTTP status and a one-line message."""

    def __init__(self, status: int, detail: str, close: bool = False):
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


async def spool_upload(request, path: Path, max_mb: float, timeout: float) -> dict[str, str]:
    """The uploaded file from a raw body or a multipart form (first file field) into `path`, chunk by chunk, so
    an upload costs disk, not memory; at most max_mb MiB (413), the whole body within `timeout` seconds (408).
    Returns the form's text fields (`hints`), {} for a raw body."""
    fields: dict[str, str] = {}
    max_bytes, mb = int(max_mb * 2**20), f"{max_mb:g} MB"
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise UploadError(413, f"upload of {int(length) / 2**20:.2f} MB is over the limit of {mb}")
    received = 0

    async def chunks():
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, f"upload is over the limit of {mb}")
            yield chunk

    async def receive_file():
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            # Starlette's parser keeps a file part in a SpooledTemporaryFile: 1 MB in memory, the rest on disk
            form = await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=10).parse()
            try:
                files = [v for v in form.values() if isinstance(v, UploadFile)]
                fields.update((k, v) for k, v in form.items() if isinstance(v, str))
                if not files:
                    raise UploadError(400, "the form has no file field; send the image as a file")
                with open(path, "wb") as f:
                    await asyncio.to_thread(shutil.copyfileobj, files[0].file, f)
            finally:
                await form.close()
        else:
            with open(path, "wb") as f:
                async for chunk in chunks():
                    f.write(chunk)

    try:
        await asyncio.wait_for(receive_file(), timeout)
    except asyncio.TimeoutError:
        raise UploadError(408, f"the upload did not arrive within {timeout:g} s ({received / 2**20:.2f} MB "
                               f"received{f' of {int(length) / 2**20:.2f}' if length and length.isdigit() else ''})",
                          close=True) from None
    except MultiPartException as e:
        raise UploadError(400, f"bad multipart form: {e.message}") from None
    if path.stat().st_size == 0:
        raise UploadError(400, "empty upload: no image bytes received")
    return fields


def check_header(path: Path, max_pixels: int) -> tuple[int, int]:
    """(W, H) from the image file's header, without decoding pixels; UploadError when the file is no image we
    read or declares more than max_pixels."""
    with open(path, "rb") as f:
        data = f.read(16)
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(415, f"not an image: first bytes {data[:8].hex()} are no JPEG/PNG/BMP/GIF/TIFF/WebP")
    try:
        with Image.open(path) as im:                      # parses the header only
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


def decode_upload(job: Job, path: Path):
    """The spooled upload's pixels (H, W, 3) uint8, unless its client has gone; 400 when it does not decode."""
    job.check("before its turn")
    try:
        rgb = load_rgb(path)
    except READ_ERRORS as e:
        raise UploadError(400, f"cannot decode the image: {e}") from None
    return rgb


def colorize_file(job: Job, colorizer, path: Path, size: int, temperature: float | None, hints=()) -> bytes:
    """An image file -> PNG bytes: the same decode, colorize_image (alpha kept) and pixels as
    `cli.py colorize --format png [--hints]`, with its strip-wise full-resolution rebuild (bounded memory).
    Stops with ClientGone at a stage boundary (after decoding, after the network, after the rebuild) once the
    job's client has gone."""
    rgb = decode_upload(job, path)
    alpha = load_alpha(path, rgb.shape[:2])
    job.check("after decoding, before colorizing")
    cfg = ColorizeConfig(size=size, temperature=temperature, format="png", hints=tuple(hints) or None)
    img = colorize_image(colorizer, rgb, alpha, cfg, between=job.check)
    del rgb
    job.check("after colorizing, before encoding the PNG")
    ok, png = cv2.imencode(".png", img[..., [2, 1, 0, 3][: img.shape[2]]])       # OpenCV's channel order
    assert ok, "PNG encoding failed"
    return png.tobytes()


def suggest_file(job: Job, colorizer, path: Path, size: int, x: int, y: int, hints, k: int) -> list[dict]:
    """The k colours the class head finds likely at photo pixel (x, y) given `hints`, most likely first:
    [{"ab", "hex", "p"}], hex being that ab at the photo's own lightness at (x, y) (what the result would show
    there). The point is mapped to the network's size x size input as the whole photo is resized to it."""
    rgb = decode_upload(job, path)
    H, W = rgb.shape[:2]
    L = net_input_rgb(rgb, size)
    lightness = float(rgb_to_lab(rgb[y:y + 1, x:x + 1])[0, 0, 0])
    del rgb
    job.check("after decoding, before the network")
    planes = hint_planes(list(hints), (H, W), (size, size)) if hints else None
    colors = []
    for a, b, p in colorizer.suggest(L, net_pixel(x, W, size), net_pixel(y, H, size), hints=planes, k=k):
        rgb8 = lab_to_rgb(np.array([[[lightness, a, b]]], np.float32))[0, 0]
        colors.append({"ab": [round(float(a), 2), round(float(b), 2)], "p": round(float(p), 4),
                       "hex": "#" + "".join(f"{int(v):02x}" for v in rgb8)})
    return colors


def create_app(colorizer, cfg: ServeConfig):
    """The FastAPI app serving `colorizer` (loaded once, shared by every request)."""
    queue = ColorizeQueue(cfg.queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        queue.close()

    app = FastAPI(title="colorfast", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.queue = queue
    app.add_middleware(HostOriginGuard, host=cfg.host, port=cfg.port, allow_origins=cfg.allow_origin)
    page = PAGE.read_text(encoding="utf-8")
    guided = bool(getattr(colorizer, "guided", False))
    health = {"status": "ok", "checkpoint": Path(colorizer.source).name, "loss": colorizer.loss,
              "temperature": colorizer.temperature_for(cfg.temperature), "decoding": colorizer.describe(cfg.temperature),
              "size": cfg.size, "max_mb": cfg.max_mb, "max_pixels": cfg.max_pixels, "queue": cfg.queue,
              "guided": guided}

    @app.exception_handler(UploadError)
    async def _upload_error(request, e: UploadError):
        # a 408 closes the connection: its client may still be sending a body nobody reads
        return JSONResponse({"detail": e.detail}, status_code=e.status,
                            headers={"Connection": "close"} if e.close else None)

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

    def read_hints(fields: dict, query: str | None, W: int, H: int) -> list:
        """The request's hints (form field `hints`, else ?hints=) for a W x H photo; UploadError(400) in one line
        for bad JSON, too many, points outside the photo, or any hint for a checkpoint that takes none."""
        text = fields.get("hints", query)
        if text is None or not text.strip():
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UploadError(400, f"hints: not JSON ({e})") from None
        except RecursionError:                      # "[[[[...": deeper than the parser's stack
            raise UploadError(400, "hints: not a list of hints (nested too deeply)") from None
        try:
            hints = parse_hints(data)
            check_inside(hints, (H, W))
        except ValueError as e:
            raise UploadError(400, f"hints: {e}") from None
        if hints and not guided:
            raise UploadError(400, f"hints need a guided checkpoint (siggraph17); "
                                   f"{Path(colorizer.source).name} colorizes from lightness alone")
        if len(hints) > MAX_HINTS:
            raise UploadError(400, f"hints: {len(hints)} hints, at most {MAX_HINTS} are taken")
        return hints

    async def queued(request: Request, what: str, work):
        """The guards every upload passes, then `work(fields, W, H) -> (fn, *args)` run in line: a place in
        line before the body is read (503 when full), the body spooled to disk (413, 408), the header checked
        (415, 413, 400), a client that leaves dropped. -> (result, seconds waited, seconds of work, W, H), or
        the Response to send instead."""
        who = "{}:{}".format(*request.client) if request.client else "a client"
        W = H = 0
        try:
            with queue.place(), tempfile.TemporaryDirectory(prefix="colorfast-serve-") as d:
                path = Path(d) / "upload"
                fields = await spool_upload(request, path, cfg.max_mb, cfg.body_timeout)
                W, H = check_header(path, cfg.max_pixels)
                fn, *args = work(fields, W, H)
                job, gone = Job(), asyncio.Event()
                watcher = asyncio.ensure_future(watch_disconnect(request.receive, job, gone))
                try:
                    result, waited, seconds = await queue.run(job, gone, fn, colorizer, path, *args)
                finally:
                    watcher.cancel()
        except Busy as e:
            log.info(f"{who}: refused, the queue is full ({queue.places - 1} waiting); retry after {e.retry_after} s")
            return JSONResponse({"detail": f"the server is busy ({cfg.queue} requests are waiting); try again in "
                                           f"{e.retry_after} s"}, status_code=503,
                                headers={"Retry-After": str(e.retry_after)})
        except ClientDisconnect:
            log.warning(f"{who} went away during its upload")
            return Response(status_code=499)            # nobody reads it
        except ClientGone as e:
            log.warning(f"{who} went away {e.stage}: its {W} x {H} photo is dropped ({what})")
            return Response(status_code=499)
        return result, waited, seconds, W, H

    @app.post("/api/colorize", responses={200: {"content": {"image/png": {}}}})
    async def api_colorize(request: Request, temperature: str | None = Query(None), hints: str | None = Query(None)):
        try:
            t = colorizer.temperature_for(cfg.temperature if temperature is None else
                                          check_temperature(temperature, "temperature"))
        except ValueError as e:
            raise UploadError(422, str(e)) from None
        applied = []

        def work(fields, W, H):
            applied[:] = read_hints(fields, hints, W, H)
            return colorize_file, cfg.size, t, applied

        done = await queued(request, "colorize", work)
        if isinstance(done, Response):
            return done
        png, waited, seconds, W, H = done
        return Response(png, media_type="image/png", headers={
            "X-Temperature": f"{t:g}", "X-Seconds": f"{seconds:.3f}", "X-Queue-Seconds": f"{waited:.3f}",
            "X-Image-Size": f"{W}x{H}", "X-Hints": str(len(applied)), "Cache-Control": "no-store"})

    @app.post("/api/suggest")
    async def api_suggest(request: Request, x: int = Query(ge=0), y: int = Query(ge=0),
                          k: int = Query(5, ge=1, le=MAX_SUGGESTIONS), hints: str | None = Query(None)):
        if not guided or colorizer.centers is None:
            raise UploadError(400, f"suggested colours need a guided checkpoint with a class head (siggraph17); "
                                   f"{Path(colorizer.source).name} is not one")

        def work(fields, W, H):
            if x >= W or y >= H:
                raise UploadError(422, f"point ({x}, {y}) is outside the {W} x {H} photo")
            return suggest_file, cfg.size, x, y, read_hints(fields, hints, W, H), k

        done = await queued(request, "suggest", work)
        if isinstance(done, Response):
            return done
        colors, waited, seconds, W, H = done
        return JSONResponse({"x": x, "y": y, "colors": colors}, headers={
            "X-Seconds": f"{seconds:.3f}", "X-Queue-Seconds": f"{waited:.3f}", "X-Image-Size": f"{W}x{H}",
            "Cache-Control": "no-store"})

    return app


def uvicorn_config(app, cfg: ServeConfig, **kw):
    """The uvicorn.Config `run` serves with (the tests use the same): h11 with a header timeout."""
    import uvicorn
    level = os.environ.get("COLORFAST_LOG", "warning")
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)     # our one-line messages in uvicorn's format
    log_config["loggers"]["colorfast"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, http=protocol_with_header_timeout(cfg.header_timeout),
                          timeout_keep_alive=5, log_config=log_config, log_level=level, **kw)


def run(cfg: ServeConfig) -> None:
    """Load the checkpoint once and serve until Ctrl-C."""
    import uvicorn
    from colorfast.loader import load_colorizer
    colorizer = load_colorizer(cfg.checkpoint, device=cfg.device, runtime=cfg.runtime)
    app = create_app(colorizer, cfg)
    print(f"colorfast: {cfg.checkpoint} ({colorizer.loss}; {colorizer.describe(cfg.temperature)}) on "
          f"http://{cfg.host}:{cfg.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.Server(uvicorn_config(app, cfg)).run()
