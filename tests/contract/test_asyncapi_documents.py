"""The AsyncAPI documents in docs/asyncapi are what the code generates, and the AsyncAPI project's own parser
(@asyncapi/parser, pinned in tools/asyncapi) finds no error in what the code generates (`make lint` runs it on the
committed files)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from labornet.shared.asyncapi import render, service_document, write_documents
from labornet.shared.settings import SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "asyncapi"
TOOL = ROOT / "tools" / "asyncapi"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_committed_document_is_what_the_code_generates(service: str) -> None:
    committed = DOCS / f"{service}.json"
    assert committed.exists(), f"{committed} is missing: run `labornet asyncapi --out docs/asyncapi`"
    assert committed.read_text("utf-8") == render(service_document(service)), (
        f"{committed} differs from the events {service} lists in labornet.{service}.contracts: "
        "run `labornet asyncapi --out docs/asyncapi` and commit the result"
    )


def test_the_docs_folder_holds_one_document_per_service() -> None:
    assert sorted(path.name for path in DOCS.glob("*.json")) == sorted(f"{s}.json" for s in SERVICE_NAMES)
    for service in SERVICE_NAMES:
        document = json.loads((DOCS / f"{service}.json").read_text("utf-8"))
        assert document["asyncapi"] == "3.0.0"
        assert document["id"] == f"urn:labornet:bus:{service}"


def _parser() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the AsyncAPI parser (npm @asyncapi/parser) cannot run here")
    if not (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the AsyncAPI parser (npm @asyncapi/parser) cannot be installed")
        installed = subprocess.run(
            [npm, "ci", "--prefix", str(TOOL), "--ignore-scripts", "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert installed.returncode == 0, f"npm ci in tools/asyncapi failed:\n{installed.stdout}\n{installed.stderr}"
    return [node, str(TOOL / "validate.mjs")]


def test_the_asyncapi_parser_finds_no_error_in_the_generated_documents(tmp_path: Path) -> None:
    command = _parser()
    generated = write_documents(tmp_path, SERVICE_NAMES)
    result = subprocess.run([*command, *map(str, generated)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the AsyncAPI parser refused a document:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count(": valid (AsyncAPI 3.0.0") == len(generated), result.stdout


def test_the_validator_fails_on_a_document_with_an_error(tmp_path: Path) -> None:
    command = _parser()
    document = service_document("insurance")
    operation = next(iter(document["operations"].values()))
    operation["messages"].append({"$ref": "#/channels/deadletter/messages/org.labornet.platform.dead-letter"})
    broken = tmp_path / "broken.json"
    broken.write_text(render(document), "utf-8")
    result = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "error asyncapi3-operation-messages-from-referred-channel" in result.stdout, result.stdout


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_every_service_serves_its_document(service: str, tmp_path: Path) -> None:
    create_app = importlib.import_module(f"labornet.{service}.app").create_app
    app = create_app(Settings(service=service, data_dir=tmp_path))  # type: ignore[call-arg]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        response = await client.get("/asyncapi.json")
        openapi = (await client.get("/openapi.json")).json()
    assert response.status_code == 200, response.text
    assert response.json() == service_document(service)
    assert "/asyncapi.json" in openapi["paths"]
