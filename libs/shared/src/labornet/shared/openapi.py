"""The OpenAPI documents of the four services, as committed under ``docs/openapi/<service>.json``.

Each document is what the service's app serves at ``/openapi.json`` (edge problems included, see
:func:`labornet.shared.problems.document_edge_problems`), built for Sichuan (510000): the routes are the same in
every province, only the title names the province. ``tests/contract`` fails when a committed document differs
from what the code generates; write them again with::

    .venv/bin/python -m labornet.shared.openapi --out docs/openapi
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from labornet.shared.settings import SERVICE_NAMES, ServiceName, Settings

DOCUMENT_PROVINCE = "510000"


def service_openapi(service: ServiceName) -> dict[str, Any]:
    """The OpenAPI document of ``service`` (its app is built, never started)."""
    settings = Settings(service=service, province=DOCUMENT_PROVINCE)
    app = importlib.import_module(f"labornet.{service}.app").create_app(settings)
    document: dict[str, Any] = app.openapi()
    return document


def render(document: dict[str, Any]) -> str:
    """The committed form of a document: indented JSON, Chinese as is, one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for service in SERVICE_NAMES:
        path = out / f"{service}.json"
        path.write_text(render(service_openapi(service)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write each service's OpenAPI document as JSON.")
    parser.add_argument("--out", type=Path, default=Path("docs/openapi"), help="the folder to write into")
    for path in write_all(parser.parse_args(argv).out):
        print(path)


if __name__ == "__main__":
    main()
