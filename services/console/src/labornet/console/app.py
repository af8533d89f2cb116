"""Entry point: `uvicorn --factory labornet.console.app:create_app` (configuration from LABORNET_CONSOLE_*).

The bootstrap of the officer console: one HTTP client for the node's four services, the session cookie's codec,
the sign-in (the node's dev issuer key, or OpenID Connect), this province's working-day calendar and the clock
(tests pass their own), the pages, the static files (the vendored htmx) and the probes and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from labornet.console import __version__
from labornet.console.adapters.oidc import OidcClient
from labornet.console.adapters.services import ApiError, Services
from labornet.console.config import ConsoleSettings
from labornet.console.entrypoints import (
    applications,
    auth,
    brands,
    cases,
    dispatches,
    fairs,
    federation,
    placements,
    transfers,
    vacancies,
    work,
)
from labornet.console.entrypoints.web import Console, CsrfRefused, NotSignedIn, Page, current_page, make_templates
from labornet.console.session import SessionCodec
from labornet.shared.clock import Clock, utcnow
from labornet.shared.observability import HttpMetrics, configure_logging
from labornet.shared.provinces import load_registry
from labornet.shared.signing import load_private_key
from labornet.shared.workdays import Calendars

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self' https:; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


async def _page(request: Request) -> Page:
    found = getattr(request.state, "page", None)
    return found if isinstance(found, Page) else await current_page(request)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _sign_in(request: Request, _exc: NotSignedIn) -> Response:
        page = await _page(request)
        if page.session.token is not None:
            page.session.notify(page.t("signin.expired"), "error")
        page.session.token = None
        page.session.changed = True
        return page.finish(RedirectResponse("/signin", status_code=303))

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _exc: CsrfRefused) -> Response:
        page = await _page(request)
        return page.render("error.html", 403, title=page.t("forbidden.title"), message=page.t("forbidden.csrf"))

    @app.exception_handler(ApiError)
    async def _service_error(request: Request, exc: ApiError) -> Response:
        page = await _page(request)
        title = page.t("notfound.title" if exc.status == 404 else "error.title")
        status = exc.status if exc.status in (403, 404, 409) else 502
        return page.render("error.html", status, title=title, message=f"{page.t('error.service')}: {exc.detail}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path in ("/livez", "/readyz", "/metrics") or request.url.path.startswith("/static/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        page = await _page(request)
        title = page.t("notfound.title" if exc.status_code == 404 else "error.title")
        return page.render("error.html", exc.status_code, title=title, message=str(exc.detail))


def create_app(
    settings: ConsoleSettings | None = None,
    clock: Clock = utcnow,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The console; tests pass their settings, a clock of their own, and may route its HTTP calls (``transport``)."""
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json, "console", settings.province)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines would log URLs with identity numbers
        async with httpx.AsyncClient(timeout=settings.service_timeout_s, transport=transport) as http:
            app.state.console = Console(
                settings=settings,
                services=Services(settings, http),
                codec=SessionCodec(
                    settings.session_secret.get_secret_value(), settings.session_ttl_s, settings.cookie_secure
                ),
                templates=make_templates(),
                calendar=Calendars.configured(path=settings.calendar_path).of(settings.province),
                registry=load_registry(settings.provinces_path),
                clock=clock,
                dev_key=(
                    load_private_key(settings.dev_issuer_key_path)
                    if settings.dev_sign_in and settings.dev_issuer_key_path is not None
                    else None
                ),
                oidc=OidcClient(settings, http) if settings.oidc_enabled else None,
            )
            log.info("officer console of province %s started", settings.province)
            yield

    app = FastAPI(
        title=f"LaborNet officer console ({settings.province})",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")  # pages carry personal data
        return response

    app.add_middleware(HttpMetrics, service="console")  # outermost: times every page by its route

    @app.get("/livez", response_class=PlainTextResponse, include_in_schema=False)
    async def livez() -> str:
        return "ok"

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the four services of this node answer their own /readyz."""
        console: Console = request.app.state.console
        answers = await console.services.readiness()
        ready = all(ok for ok, _ in answers.values())
        checks = {service: "ok" if ok else said for service, (ok, said) in answers.items()}
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/static", StaticFiles(directory=str(files("labornet.console").joinpath("static"))), name="static")
    for router in (
        auth.router,
        work.router,
        vacancies.router,
        transfers.router,
        cases.router,
        brands.router,
        applications.router,
        dispatches.router,
        fairs.router,
        placements.router,
        federation.router,
    ):
        app.include_router(router)
    install_handlers(app)
    return app
