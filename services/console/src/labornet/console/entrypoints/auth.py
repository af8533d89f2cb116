"""Sign-in and sign-out: the dev issuer of the node (embedded federations) or OpenID Connect (production)."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.oidc import OidcError
from labornet.console.entrypoints.web import FormDep, PageDep
from labornet.console.session import Session
from labornet.shared.auth import issue_token

log = logging.getLogger(__name__)
router = APIRouter()

ROLES = ("officer", "admin")
_NAME = re.compile(r"^[\w.\-\u00b7 ]{1,60}$")


@router.get("/signin")
async def signin_form(page: PageDep) -> Response:
    return page.render("signin.html", roles=ROLES, errors={}, values={})


@router.post("/signin")
async def signin(page: PageDep, form: FormDep) -> Response:
    console = page.console
    if console.oidc is not None:
        try:
            url, flow = await console.oidc.begin(str(page.request.url_for("oidc_callback")))
        except OidcError as exc:
            log.warning("OpenID Connect sign-in could not start: %s", exc)
            return page.redirect("/signin", f"{page.t('signin.failed')}: {exc}", "error")
        page.session.oidc = flow
        page.session.changed = True
        return page.redirect(url)
    if console.dev_key is None:
        return page.render("signin.html", 400, roles=ROLES, errors={}, values=form)
    name, role = form.get("name", ""), form.get("role", "")
    errors: dict[str, str] = {}
    if not _NAME.match(name):
        errors["name"] = "1–60 letters, digits, spaces, dots or hyphens" if page.language == "en" else "1–60 个字符"
    if role not in ROLES:
        errors["role"] = "officer or admin" if page.language == "en" else "请选择经办人员或管理员"
    if errors:
        return page.render("signin.html", 422, roles=ROLES, errors=errors, values=form)
    settings = console.settings
    assert settings.auth_issuer is not None
    roles = ["officer", "admin"] if role == "admin" else ["officer"]
    token = issue_token(
        console.dev_key,
        sub=name,
        province=settings.province,
        roles=roles,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        ttl_s=settings.session_ttl_s,
    )
    page.session = console.codec.start(sub=name, name=name, roles=roles, token=token, ttl_s=settings.session_ttl_s)
    log.info("dev sign-in of %s as %s", name, role)
    return page.redirect("/", page.t("signin.done"))


@router.get("/auth/callback")
async def oidc_callback(
    page: PageDep,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    console = page.console
    if console.oidc is None:
        return page.redirect("/signin")
    flow, page.session.oidc = page.session.oidc, None
    page.session.changed = True
    try:
        if error:
            raise OidcError(f"the identity provider answered {error}")
        signed_in = await console.oidc.finish(flow, code, state)
    except OidcError as exc:
        log.warning("OpenID Connect sign-in failed: %s", exc)
        return page.redirect("/signin", f"{page.t('signin.failed')}: {exc}", "error")
    page.session = console.codec.start(
        sub=signed_in.sub,
        name=signed_in.name,
        roles=signed_in.roles,
        token=signed_in.access_token,
        ttl_s=signed_in.expires_in,
    )
    log.info("OpenID Connect sign-in of %s", signed_in.sub)
    return page.redirect("/", page.t("signin.done"))


@router.post("/signout")
async def signout(page: PageDep, _form: FormDep) -> Response:
    page.session = Session(changed=True)
    return page.redirect("/signin", page.t("signout.done"))
