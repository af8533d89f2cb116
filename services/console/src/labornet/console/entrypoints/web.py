"""What every page shares: the console's wiring, the visitor's session and language, rendering, CSRF, redirects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from labornet.console.adapters.oidc import OidcClient
from labornet.console.adapters.services import ApiError, Services
from labornet.console.config import ConsoleService, ConsoleSettings
from labornet.console.i18n import Language, choose, label, translate
from labornet.console.session import CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from labornet.shared.clock import CHINA, Clock, today_in_china
from labornet.shared.provinces import ProvinceRegistry
from labornet.shared.workdays import WorkCalendar

LANG_COOKIE = "lang"


@dataclass
class Console:
    """The console's wiring, built once in the lifespan (see app.py)."""

    settings: ConsoleSettings
    services: Services
    codec: SessionCodec
    templates: Jinja2Templates
    calendar: WorkCalendar
    registry: ProvinceRegistry
    clock: Clock
    dev_key: Ed25519PrivateKey | None = None
    oidc: OidcClient | None = None


def china_time(value: str | None) -> str:
    """A UTC timestamp the services answer, as China's wall clock (YYYY-MM-DD HH:MM)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def make_templates() -> Jinja2Templates:
    environment = Environment(
        loader=FileSystemLoader(str(files("labornet.console").joinpath("templates"))),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["china_time"] = china_time
    return Jinja2Templates(env=environment)


class NotSignedIn(Exception):
    """The page needs a signed-in officer."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token."""


@dataclass
class Page:
    """One request as the console sees it: the visitor's session and language."""

    request: Request
    console: Console
    session: Session
    language: Language
    language_changed: bool = False
    extra_cookies: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        if not self.session.signed_in or self.session.token is None:
            raise NotSignedIn
        return self.session.token

    def t(self, key: str) -> str:
        return translate(key, self.language)

    def label(self, group: str, value: str | None) -> str:
        return label(group, value, self.language)

    def detail(self, what: str, value: str) -> str:
        """One fact of a today's-work item in the page's language (see labornet.console.domain.worklist.Detail)."""
        if what == "province":
            return self.province_name(value)
        if what == "money":
            return f"{value} {'元' if self.language == 'zh-CN' else 'CNY'}"
        if what in ("reason", "category"):
            return self.label(what, value)
        return value

    def province_name(self, code: str | None) -> str:
        if not code:
            return ""
        try:
            found = self.console.registry.get(code)
        except LookupError:
            return code
        return f"{found.short_zh if self.language == 'zh-CN' else found.en} ({code})"

    def finish(self, response: Response) -> Response:
        if self.session.changed:
            self.console.codec.save(self.session, response)
        if self.language_changed:
            response.set_cookie(
                LANG_COOKIE, self.language, max_age=365 * 86400, secure=self.console.codec.secure, samesite="lax"
            )
        return response

    def render(self, template: str, status_code: int = 200, *, partial: bool = False, **context: Any) -> Response:
        """A page (or, ``partial``, a fragment htmx swaps in, which leaves pending messages for the next page)."""
        body = self.console.templates.get_template(template).render(
            page=self,
            t=self.t,
            session=self.session,
            flash=[] if partial else self.session.take_flash(),
            csrf_field=CSRF_FIELD,
            province=self.console.settings.province,
            today=today_in_china(self.console.clock()),
            **context,
        )
        return self.finish(HTMLResponse(body, status_code=status_code))

    def redirect(self, url: str, message: str | None = None, kind: str = "ok") -> Response:
        if message:
            self.session.notify(message, kind)
        return self.finish(RedirectResponse(url, status_code=303))

    async def call(self, service: ConsoleService, method: str, path: str, **kwargs: Any) -> Any:
        """A service call as the signed-in officer; an expired or refused token ends the session."""
        try:
            return await self.console.services.call(service, method, path, self.token, **kwargs)
        except ApiError as exc:
            if exc.status == 401:
                self.session = Session(changed=True)
                self.session.notify(self.t("signin.expired"), "error")
                raise NotSignedIn from exc
            raise


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


async def current_page(request: Request) -> Page:
    console = console_of(request)
    requested = request.query_params.get("lang")
    language = choose(requested, request.cookies.get(LANG_COOKIE))
    page = Page(request, console, console.codec.load(request), language, language_changed=requested == language)
    request.state.page = page
    return page


PageDep = Annotated[Page, Depends(current_page)]


async def signed_in_page(page: PageDep) -> Page:
    if not page.session.signed_in:
        raise NotSignedIn
    return page


OfficerPage = Annotated[Page, Depends(signed_in_page)]


async def checked_form(request: Request, page: PageDep) -> dict[str, str]:
    """The POSTed form, once its CSRF token matches the session's (403 page otherwise)."""
    form = await request.form()
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not page.session.csrf_matches(str(sent) if sent is not None else None):
        raise CsrfRefused
    return {key: str(value).strip() for key, value in form.items() if key != CSRF_FIELD and isinstance(value, str)}


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def nested(form: Mapping[str, str], *names: str) -> dict[str, Any]:
    """``employer.name`` style form fields as the nested JSON object the service expects (empty ones left out)."""
    body: dict[str, Any] = {}
    for name in names:
        value = form.get(name, "")
        if value == "":
            continue
        target = body
        *parents, last = name.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return body
