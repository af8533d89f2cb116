"""The console against a fake node (httpx MockTransport answering as the four services would) and a fake IdP:
sign-in, sessions and CSRF, today's work, field errors, languages, probes and metrics."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from labornet.console.app import create_app
from labornet.console.config import ConsoleSettings
from labornet.console.domain.worklist import Kind, case_items, todays_work, transfer_items, workdays_left
from labornet.shared.keys import ensure_node_keys
from labornet.shared.signing import load_public_key
from labornet.shared.workdays import WorkCalendar

ZJ = "330000"
NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # Tuesday 10 March 2026, 10:00 in China


class FakeNode:
    """Answers the console's calls as the node's services would, checking the officer's bearer token."""

    def __init__(self, public_key_path: Path) -> None:
        self.public_key = load_public_key(public_key_path)
        self.calls: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}

    def claims(self, request: httpx.Request) -> dict[str, Any]:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        found: dict[str, Any] = jwt.decode(token, self.public_key, algorithms=["EdDSA"], audience="labornet")
        return found

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"ready": True, "checks": {"database": "ok"}})
        self.claims(request)
        handler = self.routes.get((request.method, f"{request.url.host}:{request.url.port}{request.url.path}"))
        if handler is not None:
            return handler(request)
        if request.url.path in ("/api/v1/transfers", "/api/v1/cases", "/api/v1/dispatches"):
            return httpx.Response(200, json={"items": [], "next_after": None})
        if request.url.path == "/api/v1/applications":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        if request.url.path in ("/api/v1/settlements", "/api/v1/demands"):
            return httpx.Response(200, json={"items": []})
        return httpx.Response(404, json={"type": "x/not-found", "title": "Not Found", "detail": "no such thing"})


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    node = ensure_node_keys(ZJ, tmp_path / "keys" / ZJ, tmp_path / "trust-list.json")
    return node.keys_dir


def settings(keys: Path, **overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {
        "province": ZJ,
        "jobs_url": "http://jobs:1",
        "insurance_url": "http://insurance:2",
        "brands_url": "http://brands:3",
        "rights_url": "http://rights:4",
        "session_secret": "s" * 40,
        "cookie_secure": False,
        "dev_issuer_key_path": keys / "token.key",
        "log_json": False,
    }
    values.update(overrides)
    return ConsoleSettings(**values)


@pytest.fixture
def node(keys: Path) -> FakeNode:
    return FakeNode(keys / "token.pub")


@pytest.fixture
def client(keys: Path, node: FakeNode) -> Iterator[TestClient]:
    app = create_app(settings(keys), clock=lambda: NOW, transport=httpx.MockTransport(node))
    with TestClient(app, base_url="http://console.test", follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, role: str = "officer", name: str = "li-ming") -> None:
    token = csrf_of(client.get("/signin").text)
    response = client.post("/signin", data={"csrf_token": token, "name": name, "role": role})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"


def test_pages_need_a_sign_in(client: TestClient) -> None:
    for path in ("/", "/vacancies", "/transfers", "/cases", "/federation"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"


def test_dev_sign_in_mints_a_token_of_the_node_issuer_kept_in_an_encrypted_http_only_cookie(
    client: TestClient, node: FakeNode
) -> None:
    sign_in(client, "admin", "wang-fang")
    cookie = next(c for c in client.cookies.jar if c.name == "labornet_console").value or ""
    response = client.get("/")
    assert response.status_code == 200
    assert "wang-fang" in response.text
    call = next(r for r in node.calls if r.url.path == "/api/v1/transfers")
    token = call.headers["authorization"].removeprefix("Bearer ")
    # the bearer token is not readable in the cookie: neither it nor any token's header and claims in clear (a
    # bare "eyJ" can occur in the encrypted value by chance)
    assert token not in cookie and token.split(".")[1] not in cookie
    assert re.search(r"eyJ[\w-]+\.eyJ[\w-]+", cookie) is None
    claims = node.claims(call)
    assert claims["sub"] == "wang-fang"
    assert claims["province"] == ZJ
    assert claims["iss"] == f"labornet:{ZJ}"
    assert sorted(claims["roles"]) == ["admin", "officer"]
    assert all("eyJ" not in str(r.url) for r in node.calls)


def test_session_cookie_flags(client: TestClient) -> None:
    response = client.get("/signin")
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header
    assert "samesite=lax" in header


def test_secure_cookie_by_default(keys: Path, node: FakeNode) -> None:
    app = create_app(settings(keys, cookie_secure=True), transport=httpx.MockTransport(node))
    with TestClient(app, base_url="https://console.test") as test_client:
        assert "secure" in test_client.get("/signin").headers["set-cookie"].lower()


def test_a_post_without_the_csrf_token_is_refused_with_a_403_page(client: TestClient) -> None:
    response = client.post("/signin", data={"name": "li-ming", "role": "officer"})
    assert response.status_code == 403
    assert "CSRF" in response.text
    sign_in(client)
    for path in ("/vacancies", "/transfers/ZJ-T-1/answer", "/cases/C-1/accept", "/signout"):
        response = client.post(path, data={"csrf_token": "forged"})
        assert response.status_code == 403, path


def test_a_wrong_role_is_shown_beside_its_field(client: TestClient) -> None:
    token = csrf_of(client.get("/signin").text)
    response = client.post("/signin", data={"csrf_token": token, "name": "li", "role": "root"})
    assert response.status_code == 422
    assert 'id="role-error"' in response.text


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client)
    token = csrf_of(client.get("/").text)
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").headers["location"] == "/signin"


def test_todays_work_sorts_by_deadline_and_marks_overdue(client: TestClient, node: FakeNode) -> None:
    def transfers(request: httpx.Request) -> httpx.Response:
        side, state = request.url.params["side"], request.url.params["state"]
        items = []
        if (side, state) == ("sending", "received"):
            items = [
                {
                    "id": "330000-T-LATE",
                    "side": "sending",
                    "state": "received",
                    "answer_due": "2026-03-05",
                    "complete_due": "2026-03-30",
                    "from_province": ZJ,
                    "to_province": "510000",
                    "reason": "new-employment",
                }
            ]
        return httpx.Response(200, json={"items": items, "next_after": None})

    def cases(request: httpx.Request) -> httpx.Response:
        items = []
        if request.url.params["status"] == "referred":
            items = [
                {
                    "id": "510000-C-SOON",
                    "status": "referred",
                    "handling_province": ZJ,
                    "home_province": "510000",
                    "acceptance_due": "2026-03-12",
                    "category": "wage-arrears",
                    "work_place_name": "杭州市",
                    "amount_owed": "1000.00",
                }
            ]
        return httpx.Response(200, json={"items": items, "next_after": None})

    node.routes[("GET", "insurance:2/api/v1/transfers")] = transfers
    node.routes[("GET", "rights:4/api/v1/cases")] = cases
    sign_in(client)
    html = client.get("/").text
    assert html.index("330000-T-LATE") < html.index("510000-C-SOON")
    late_row = html[html.index("330000-T-LATE") - 400 : html.index("330000-T-LATE")]
    assert 'class="overdue"' in late_row
    assert "已逾期" in html
    english = client.get("/?lang=en").text
    assert "Overdue" in english
    assert "Contact letter awaiting an information sheet" in english
    assert client.cookies.get("lang") == "en"


def test_a_service_field_error_is_shown_next_to_the_field(client: TestClient, node: FakeNode) -> None:
    problem = {
        "type": "https://labornet.example/problems/validation-error",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "the request is not valid: salary.min: salary min 9000 is greater than max 8000",
        "errors": [{"field": "salary.min", "message": "salary min 9000 is greater than max 8000"}],
    }
    node.routes[("POST", "jobs:1/api/v1/vacancies")] = lambda request: httpx.Response(
        422, json=problem, headers={"content-type": "application/problem+json"}
    )
    sign_in(client)
    token = csrf_of(client.get("/vacancies/new").text)
    response = client.post("/vacancies", data={"csrf_token": token, "title": "厨师", "salary.min": "9000"})
    assert response.status_code == 422
    field = re.search(r'<p class="error" id="salary-min-error">([^<]+)</p>', response.text)
    assert field and "greater than max" in field.group(1)
    assert 'aria-describedby="salary-min-error"' in response.text
    assert 'value="厨师"' in response.text  # what was typed stays


def test_readyz_follows_the_services(keys: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        if request.url.host == "rights":
            return httpx.Response(503, json={"ready": False, "checks": {"broker": "silent for 30 s"}})
        return httpx.Response(200, json={"ready": True, "checks": {}})

    app = create_app(settings(keys), transport=httpx.MockTransport(down))
    with TestClient(app) as test_client:
        assert test_client.get("/livez").text == "ok"
        response = test_client.get("/readyz")
        assert response.status_code == 503
        assert "silent" in response.json()["checks"]["rights"]
        assert test_client.get("/static/htmx.min.js").status_code == 200
        metrics = test_client.get("/metrics").text
        assert re.search(r'labornet_http_request_duration_seconds_count\{[^}]*route="/readyz"', metrics)


def test_working_days_left_and_order() -> None:
    calendar = WorkCalendar.of()
    today = date(2026, 3, 10)  # a Tuesday
    assert workdays_left(calendar, today, date(2026, 3, 13)) == 3
    assert workdays_left(calendar, today, date(2026, 3, 16)) == 4  # the weekend does not count
    assert workdays_left(calendar, today, today) == 0
    assert workdays_left(calendar, today, date(2026, 3, 9)) == -1
    items = transfer_items(
        [{"id": "A", "side": "sending", "state": "received", "answer_due": "2026-03-20"}], calendar, today
    ) + case_items(
        [
            {"id": "B", "status": "referred", "handling_province": ZJ, "acceptance_due": "2026-03-02"},
            {"id": "C", "status": "returned", "home_province": ZJ},
            {"id": "D", "status": "investigating", "handling_province": ZJ, "investigation_due": "2026-09-01"},
        ],
        ZJ,
        calendar,
        today,
        10,
    )
    ordered = todays_work(items)
    assert [i.reference for i in ordered] == ["B", "A", "C"]  # D is far from its limit
    assert ordered[0].overdue and ordered[0].kind == Kind.CASE_AWAITING_ACCEPTANCE
    assert not ordered[1].overdue


# OpenID Connect ------------------------------------------------------------------------------------------------


class FakeIdP:
    issuer = "https://idp.test/realms/zj"

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, str]] = {}

    def authorize(self, url: str) -> str:
        """What the IdP does after the officer signs in there: a code bound to the request's PKCE challenge."""
        query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        assert query["redirect_uri"] == "http://console.test/auth/callback"  # derived from the request
        code = f"code-{len(self.codes)}"
        self.codes[code] = query
        return f"/auth/callback?code={code}&state={query['state']}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/realms/zj/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.issuer}/auth",
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/certs",
                },
            )
        if request.url.path == "/realms/zj/certs":
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return httpx.Response(200, json={"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
        if request.url.path == "/realms/zj/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            asked = self.codes.pop(form["code"], None)
            if asked is None or form["client_secret"] != "shh" or form["redirect_uri"] != asked["redirect_uri"]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            challenge = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
            if challenge.decode() != asked["code_challenge"]:
                return httpx.Response(400, json={"error": "invalid_grant", "error_description": "PKCE"})
            now = int(time.time())
            common = {"iss": self.issuer, "sub": "zj-officer-7", "iat": now, "exp": now + 600}
            id_token = jwt.encode(
                {**common, "aud": "console", "nonce": asked["nonce"], "name": "赵敏"},
                self.key,
                algorithm="RS256",
                headers={"kid": "k1"},
            )
            access = jwt.encode(
                {**common, "aud": "labornet", "province": ZJ, "roles": ["officer"]},
                self.key,
                algorithm="RS256",
                headers={"kid": "k1"},
            )
            return httpx.Response(200, json={"id_token": id_token, "access_token": access, "expires_in": 600})
        return httpx.Response(404)


def test_openid_connect_sign_in_with_pkce(keys: Path) -> None:
    idp = FakeIdP()
    seen: list[httpx.Request] = []

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp.test":
            return idp(request)
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_after": None})

    oidc = settings(
        keys,
        dev_issuer_key_path=None,
        oidc_discovery_url=f"{idp.issuer}/.well-known/openid-configuration",
        oidc_client_id="console",
        oidc_client_secret="shh",
    )
    app = create_app(oidc, transport=httpx.MockTransport(route))
    with TestClient(app, base_url="http://console.test", follow_redirects=False) as client:
        page = client.get("/signin").text
        assert 'name="role"' not in page  # no dev sign-in in production
        response = client.post("/signin", data={"csrf_token": csrf_of(page)})
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith(f"{idp.issuer}/auth?")
        callback = idp.authorize(location)
        forged = client.get(callback.replace("state=", "state=x"))
        assert forged.headers["location"] == "/signin"  # a state that does not match is refused
        response = client.post("/signin", data={"csrf_token": csrf_of(client.get("/signin").text)})
        callback = idp.authorize(response.headers["location"])
        response = client.get(callback)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        home = client.get("/")
        assert home.status_code == 200
        assert "赵敏" in home.text
        token = seen[-1].headers["Authorization"].removeprefix("Bearer ")
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "zj-officer-7"


def test_admins_replay_a_quarantined_event_from_the_federation_page(client: TestClient, node: FakeNode) -> None:
    record = {
        "id": 7,
        "consumer": "cases",
        "topic": "labornet.330000.rights.inbox",
        "partition": 0,
        "offset": 12,
        "event_id": "e-7",
        "event_type": "org.labornet.rights.case.referred.v1",
        "origin_province": "510000",
        "reason": "handler",
        "error": "case 510000-R-1: unknown division",
        "attempts": 3,
        "status": "quarantined",
    }
    node.routes[("GET", "rights:4/admin/v1/quarantine")] = lambda request: httpx.Response(
        200, json={"items": [record], "next_cursor": None}
    )
    replayed: list[str] = []

    def replay(request: httpx.Request) -> httpx.Response:
        assert "admin" in node.claims(request)["roles"]
        replayed.append(request.url.path)
        return httpx.Response(200, json={"id": 7, "outcome": "applied"})

    node.routes[("POST", "rights:4/admin/v1/quarantine/7/replay")] = replay
    replicas = {
        "jobs": [{"origin": "510000", "kind": "vacancies", "status": "in-sync"}],
        "brands": [{"origin": "500000", "kind": "brands", "status": "unreachable", "last_error": "refused"}],
    }
    for service, host in (
        ("jobs", "jobs:1"),
        ("insurance", "insurance:2"),
        ("brands", "brands:3"),
        ("rights", "rights:4"),
    ):
        node.routes[("GET", f"{host}/admin/v1/sync")] = lambda request, found=replicas.get(service, []): httpx.Response(
            200, json={"outbox": {"pending": 0}, "consumers": {}, "replicas": found}
        )
        if service != "rights":
            node.routes[("GET", f"{host}/admin/v1/quarantine")] = lambda request: httpx.Response(
                200, json={"items": [], "next_cursor": None}
            )
    sign_in(client, "admin")
    home = client.get("/").text
    assert "隔离的事件" in home  # today's work names the service holding quarantined events
    assert "伙伴副本不同步" in home and "重庆 (500000)" in home  # and the partner whose replica is out of sync
    assert "四川 (510000)" not in home
    page = client.get("/federation").text
    assert "unknown division" in page
    response = client.post("/federation/quarantine/rights/7/replay", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303
    assert replayed == ["/admin/v1/quarantine/7/replay"]
    assert "事件已重放: rights #7" in client.get("/federation").text


def test_an_expired_token_ends_the_session(client: TestClient, node: FakeNode) -> None:
    node.routes[("GET", "rights:4/api/v1/cases")] = lambda request: httpx.Response(
        401, json={"type": "x/unauthorized", "title": "Unauthorized", "status": 401, "detail": "the token has expired"}
    )
    sign_in(client)
    response = client.get("/cases")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    assert "登录已过期" in client.get("/signin").text
    assert client.get("/").headers["location"] == "/signin"


def test_an_identity_provider_that_does_not_answer_is_said_so(keys: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if request.url.host == "idp.test" else httpx.Response(200, json={})

    oidc = settings(
        keys,
        dev_issuer_key_path=None,
        oidc_discovery_url="https://idp.test/.well-known/openid-configuration",
        oidc_client_id="console",
    )
    with TestClient(create_app(oidc, transport=httpx.MockTransport(down)), follow_redirects=False) as client:
        response = client.post("/signin", data={"csrf_token": csrf_of(client.get("/signin").text)})
        assert response.headers["location"] == "/signin"
        assert "discovery document could not be read" in client.get("/signin").text


def test_an_edit_names_the_version_read_and_a_stale_one_says_so(client: TestClient, node: FakeNode) -> None:
    vacancy = {
        "id": "330000-V-1",
        "owner_province": ZJ,
        "title": "电工",
        "employer_name": "杭州某公司",
        "employer_credit_code": "91330100MA0000002X",
        "occupation_code": "7411",
        "division_code": "330100",
        "city": "杭州市",
        "headcount": 2,
        "salary_min": 8000,
        "salary_max": 12000,
        "employment_type": "full-time",
        "skills": ["低压电工证"],
        "contact": "0571-1",
        "closing_date": "2026-04-30",
        "status": "open",
        "version": 3,
    }
    sent: list[httpx.Request] = []

    def patch(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            409,
            json={
                "type": "https://labornet.example/problems/stale-version",
                "title": "Conflict",
                "status": 409,
                "detail": "vacancy 330000-V-1 is at version 4, not 3",
            },
        )

    node.routes[("GET", "jobs:1/api/v1/vacancies/330000-V-1")] = lambda request: httpx.Response(200, json=vacancy)
    node.routes[("PATCH", "jobs:1/api/v1/vacancies/330000-V-1")] = patch
    sign_in(client)
    page = client.get("/vacancies/330000-V-1").text
    assert 'value="8000"' in page and 'value="低压电工证"' in page  # the form holds what the service answered
    fields = re.findall(r'<input id="[^"]*" name="([^"]+)" type="[^"]*" value="([^"]*)"', page)
    form = dict(fields) | {"csrf_token": csrf_of(page), "version": "3", "headcount": "5"}
    response = client.post("/vacancies/330000-V-1", data=form)
    assert response.status_code == 409
    assert "is at version 4, not 3" in response.text
    assert sent[0].headers["If-Match"] == '"3"'
    body = json.loads(sent[0].content)
    assert body["headcount"] == "5"
    assert body["salary"] == {"min": "8000", "max": "12000"}
    assert "employer" not in body  # fixed once posted


def test_the_vacancy_search_answers_htmx_with_the_results_alone(client: TestClient, node: FakeNode) -> None:
    found = {"items": [], "total": 0, "total_exact": True, "next_cursor": None}
    asked: list[httpx.Request] = []

    def search(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json=found)

    node.routes[("GET", "jobs:1/api/v1/vacancies")] = search
    sign_in(client)
    fragment = client.get("/vacancies?q=厨师&province=510000", headers={"HX-Request": "true"}).text
    assert fragment.lstrip().startswith('<section id="results"')
    assert "<html" not in fragment
    assert asked[-1].url.params["q"] == "厨师" and asked[-1].url.params["province"] == "510000"
    assert "已登录" in client.get("/vacancies").text  # the sign-in message waited for a whole page
