"""The FastAPI application: middlewares (token, upload limit, CORS, shutdown), error replies, and the routers."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from medsam_lite.core.atomic import disk_full, why_not_written
from medsam_lite.core.case import CaseError
from medsam_lite.serve.service import VERSION, Service
from medsam_lite.serve.uploads import UploadError
from medsam_lite.serve.worker import Busy, ClientGone

log = logging.getLogger("medsam_lite.serve")
STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/healthz", "/nninteractive/healthz", "/monailabel/auth/")
OPEN_POSTS = ("/monailabel/auth/token",)  # checks the password (the token) itself


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413: at once from its Content-Length, else as soon as
    the bytes received pass it (nothing more is read)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, self._message(int(length)))
        received, started, too_large = 0, False, False

        async def limited_receive():
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # the app sees the client gone; nothing more is read
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal started
            if too_large and not started:
                return  # the app's own reply to the cut body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await _send_json(send, 413, self._message(received))

    def _message(self, size: int) -> str:
        return (f"the request is {size / 2**20:,.1f} MiB or more; this service accepts at most "
                f"{self.limit / 2**20:,.0f} MiB (--max-upload-mb)")


class TokenGuard:
    """With a token set, every endpoint but /healthz needs it: ``Authorization: Bearer T``, ``X-Token: T`` or
    ``?token=T``; 401 otherwise. The web page's own static files (no data in them) load without it, so that the
    page can ask for the token and send it with every request it makes."""

    def __init__(self, app, token: str | None) -> None:
        self.app, self.token = app, token
        page = {f"/{p.name}" for p in STATIC.iterdir()} | {"/"} if STATIC.is_dir() else set()
        self.open_paths = set(OPEN_PATHS) | page

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token or scope["method"] == "OPTIONS" or (
                scope["path"] in self.open_paths and scope["method"] in ("GET", "HEAD")) or (
                scope["path"] in OPEN_POSTS and scope["method"] == "POST"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-token", b"").decode("latin-1")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            from urllib.parse import parse_qs

            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, "this server needs its token: send 'Authorization: Bearer <token>'",
                         [(b"www-authenticate", b"Bearer")])


class StopGuard:
    """While the server stops (SIGTERM, Ctrl+C; ``Service.stopping``): a request that comes is answered 503, and
    one whose job the shutdown cuts after its grace gets the same 503 rather than uvicorn's 500 and traceback."""

    def __init__(self, app, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def refuse() -> None:
            await _send_json(send, 503, "the server is stopping; send this again once it is back",
                             [(b"retry-after", b"10")])

        if self.service.stopping:
            return await refuse()
        started = False

        async def tracking_send(event):
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.service.stopping or started:
                raise
            with contextlib.suppress(Exception):  # the connection may be closing already
                await refuse()


async def _send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def create_app(service: Service) -> FastAPI:
    """The application around a started Service (closed when the application shuts down)."""
    from fastapi.middleware.cors import CORSMiddleware

    from medsam_lite.serve import fastmedsam, monailabel, native, nninteractive, samapi

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="medsam-lite", version=VERSION, lifespan=lifespan,
                  description="LiteMedSAM box- and point-prompted segmentation: the native API (/v1), samapi's "
                              "(/sam, QuPath's SAM extension), FastMedSAM's (/upload, /segment), nnInteractive's "
                              "remote protocol (/nninteractive: 3D Slicer's nnInteractive extension, napari) and "
                              "MONAI Label's (/monailabel: 3D Slicer's MONAI Label module). Errors are JSON "
                              "`{\"detail\": ...}` naming the problem: 401 no or wrong token, 404 unknown image "
                              "(deleted or evicted: upload it again), 413 over the upload limit, 415 not a file it "
                              "reads, 422 a file or prompt it cannot use, 503 busy or stopping (with Retry-After), "
                              "507 no room left on the server's disk.")
    app.state.service = service

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(CaseError)
    async def case_error(request: Request, exc: CaseError):  # an image the model cannot take (e.g. 1000 x 1)
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone):  # nobody reads it: nginx's "client closed request"
        log.info("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=499)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse({"detail": f"server busy: {exc}; retry in a second"}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(OSError)
    async def no_room(request: Request, exc: OSError):  # the store's disk (or quota): 507, and a line for its operator
        if not disk_full(exc):
            raise exc  # a fault of the server: 500, its traceback in the log
        log.warning("WARNING %s %s refused: %s where the server keeps its images (%s) or temporary files; free "
                    "space there (or set a smaller --store-mb)", request.method, request.url.path, why_not_written(exc),
                    service.store.root)
        return JSONResponse({"detail": f"the server has no room to keep this now ({why_not_written(exc)}); delete "
                                       f"images it no longer needs, or try again later"}, status_code=507)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": f"invalid request: {errors}"}, status_code=422)

    app.include_router(native.router)
    app.include_router(samapi.router)
    app.include_router(fastmedsam.router)
    app.include_router(nninteractive.router)
    app.include_router(monailabel.router)
    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    settings = service.settings
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Compute-Seconds", "X-Slices-Encoded",
                                                                "X-Slices-Cached"])
    app.add_middleware(TokenGuard, token=settings.token)
    app.add_middleware(BodyLimit, limit=settings.max_upload_mb * 2**20)
    app.add_middleware(StopGuard, service=service)
    return app
