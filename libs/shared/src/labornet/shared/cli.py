"""The ``labornet`` command: embedded broker, keys, dev tokens, topics, migrations, services, the federation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.settings import SERVICE_NAMES, Settings

app = typer.Typer(help="LaborNet — cross-regional labour cooperation platform", no_args_is_help=True)
keys_app = typer.Typer(help="Node keys and the federation trust list", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of the federation bus", no_args_is_help=True)
federation_app = typer.Typer(help="Questions to a running federation", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(topics_app, name="topics")
app.add_typer(federation_app, name="federation")
console = Console(stderr=True)

DataDir = Annotated[
    Path, typer.Option(help="data directory (keys, trust list, SQLite files)", envvar="LABORNET_DATA_DIR")
]
Province = Annotated[str, typer.Option(help="GB/T 2260 province code, e.g. 510000", envvar="LABORNET_PROVINCE")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(str(exc))
        raise


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="port to listen on (127.0.0.1)")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory storage) until Ctrl-C."""
    embedded = EmbeddedBroker(port=port)
    try:
        embedded.start()
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(
        f"embedded broker listening on [bold]{embedded.bootstrap_servers}[/bold] (memory storage); Ctrl-C stops it"
    )
    try:
        embedded.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@keys_app.command("generate")
def keys_generate(
    province: Province,
    data_dir: DataDir = Path(".labornet"),
    valid_days: Annotated[int, typer.Option(min=1, help="validity of a new signing key")] = 365,
    rotate: Annotated[
        bool, typer.Option(help="add a new signing key; the old one stays trusted until it expires")
    ] = False,
) -> None:
    """Create the node's signing and dev-token keys (if missing) and list the signing key in the trust list."""
    from labornet.shared.keys import ensure_node_keys
    from labornet.shared.provinces import UnknownProvince, load_registry

    settings = _settings(province=province, data_dir=data_dir)
    try:
        load_registry(settings.provinces_path).get(province)
    except UnknownProvince as exc:
        _fail(str(exc))
    assert settings.keys_dir is not None and settings.trust_list_path is not None
    keys = ensure_node_keys(province, settings.keys_dir, settings.trust_list_path, valid_days, rotate)
    typer.echo(
        json.dumps(
            {
                "province": province,
                "signing_key_id": keys.signing_key_id,
                "keys_dir": str(keys.keys_dir),
                "trust_list": str(settings.trust_list_path),
            },
            ensure_ascii=False,
        )
    )


@keys_app.command("show")
def keys_show(data_dir: DataDir = Path(".labornet")) -> None:
    """Print the federation trust list."""
    from labornet.shared.signing import TrustList, TrustListError

    settings = _settings(data_dir=data_dir)
    assert settings.trust_list_path is not None
    try:
        typer.echo(json.dumps(TrustList.load(settings.trust_list_path).to_json(), indent=2, ensure_ascii=False))
    except TrustListError as exc:
        _fail(str(exc))


@app.command()
def token(
    province: Province,
    role: Annotated[list[str], typer.Option(help="worker, officer or admin (repeatable)")],
    sub: Annotated[str, typer.Option(help="subject: who the token is for")],
    data_dir: DataDir = Path(".labornet"),
    ttl: Annotated[int, typer.Option(min=60, help="lifetime in seconds")] = 8 * 3600,
) -> None:
    """Print a dev bearer token signed by the node's dev issuer key."""
    from labornet.shared.auth import issue_token
    from labornet.shared.signing import load_private_key

    settings = _settings(province=province, data_dir=data_dir)
    assert settings.keys_dir is not None and settings.auth_issuer is not None
    key_path = settings.keys_dir / "token.key"
    if not key_path.exists():
        _fail(f"no dev issuer key at {key_path}; run `labornet keys generate --province {province}` first")
    try:
        typer.echo(
            issue_token(
                load_private_key(key_path),
                sub=sub,
                province=province,
                roles=role,
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                ttl_s=ttl,
            )
        )
    except ValueError as exc:
        _fail(str(exc))


@topics_app.command("create")
def topics_create(
    bootstrap_servers: Annotated[str, typer.Option(envvar="LABORNET_KAFKA_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
) -> None:
    """Create every topic of every member province (idempotent)."""
    from labornet.shared.kafka import ensure_topics
    from labornet.shared.provinces import load_registry
    from labornet.shared.topics import node_topics

    settings = _settings(kafka_bootstrap_servers=bootstrap_servers)
    registry = load_registry(settings.provinces_path)
    names = {t for code in registry.codes() for s in SERVICE_NAMES for t in node_topics(code, s, registry.codes())}
    created = asyncio.run(ensure_topics(settings, names))
    typer.echo(json.dumps({"created": created, "total": len(names)}))


@app.command()
def asyncapi(
    out: Annotated[Path, typer.Option(help="folder to write <service>.json into")] = Path("docs/asyncapi"),
) -> None:
    """Write the AsyncAPI 3.0 document of every service's bus contract (what GET /asyncapi.json serves)."""
    from labornet.shared.asyncapi import write_documents

    for path in write_documents(out, SERVICE_NAMES):
        typer.echo(str(path))


@app.command()
def migrate(service: Annotated[str, typer.Argument(help="jobs, insurance, brands or rights")]) -> None:
    """Apply a service's migrations to LABORNET_DATABASE_URL."""
    from labornet.shared import migrations
    from labornet.shared.db import create_engine

    if service not in SERVICE_NAMES:
        _fail(f"unknown service {service!r}; expected one of {', '.join(SERVICE_NAMES)}")
    settings = _settings(service=service)

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            await migrations.upgrade(engine, f"labornet.{service}:migrations")
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo(f"{service}: migrated {settings.database_url.split('@')[-1]}")


def _follow_supervisor() -> None:
    """A process `labornet up` started (``LABORNET_SUPERVISOR_PID``) gets SIGTERM when its supervisor is gone, however
    it went (killed outright, its own bug), instead of serving on alone: Linux's parent-death signal, and an exit
    at once when the supervisor is gone already."""
    supervisor = os.environ.get("LABORNET_SUPERVISOR_PID")
    if not supervisor:
        return
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(supervisor):
        _fail(f"the supervisor (process {supervisor}) is gone")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="jobs, insurance, brands or rights")],
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Run one service of one node (configuration from LABORNET_* variables)."""
    from labornet.shared.node import run_server, server_config

    if service not in SERVICE_NAMES:
        _fail(f"unknown service {service!r}; expected one of {', '.join(SERVICE_NAMES)}")
    os.environ["LABORNET_SERVICE"] = service
    _follow_supervisor()
    # uvicorn.run's, waking once a second at rest (ADR 28)
    run_server(server_config(f"labornet.{service}.app:create_app", host, port, factory=True))


@app.command("serve-console")
def serve_console(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the officer console of one node (configuration from LABORNET_CONSOLE_* variables)."""
    from labornet.shared.node import run_server, server_config

    _follow_supervisor()
    run_server(server_config("labornet.console.app:create_app", host, port, factory=True))


@app.command("serve-node")
def serve_node(
    host: str = "127.0.0.1",
    port_base: Annotated[int, typer.Option(help="jobs listens here, insurance +1, brands +2, rights +3")] = 8000,
) -> None:
    """Run the four services of one node in one process (the light mode of `labornet up`)."""
    import uvloop

    from labornet.shared.node import serve_node as run_node

    ports: dict[str, int] = {service: port_base + offset for offset, service in enumerate(SERVICE_NAMES)}
    _follow_supervisor()
    try:
        uvloop.run(run_node(host, ports))  # the event loop `serve` gets from uvicorn (ADR 27)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def up(
    provinces: Annotated[str | None, typer.Option(help="comma-separated subset, e.g. 510000,330000")] = None,
    data_dir: DataDir = Path(".labornet"),
    port_base: Annotated[int, typer.Option(help="first HTTP port; each province takes ten")] = 8000,
    broker_port: Annotated[int, typer.Option(help="port of the embedded broker")] = 9092,
    bootstrap_servers: Annotated[str | None, typer.Option(help="use this Kafka instead of the embedded broker")] = None,
    database_url_template: Annotated[
        str | None, typer.Option(help="e.g. postgresql+asyncpg://postgres@127.0.0.1/ln_{province}_{service}")
    ] = None,
    exit_when_ready: Annotated[bool, typer.Option(help="stop everything once all services are ready")] = False,
    demo: Annotated[bool, typer.Option(help="load the demo data set on first run")] = True,
    smoke_test: Annotated[
        bool, typer.Option("--smoke", help="walk the smoke story across nodes, then stop; exit 2 if it fails")
    ] = False,
    process_per: Annotated[
        str, typer.Option(help="'service': 36 processes as deployed; 'node': one process per province (lighter)")
    ] = "service",
) -> None:
    """Run the federation: the embedded broker and every service of every province, until Ctrl-C."""
    from labornet.shared.federation import Federation, FederationError

    federation = Federation(
        data_dir=data_dir.resolve(),
        provinces=[p.strip() for p in provinces.split(",")] if provinces else None,
        port_base=port_base,
        broker_port=broker_port,
        bootstrap_servers=bootstrap_servers,
        database_url_template=database_url_template,
        console=console,
        process_per=process_per,
    )

    def on_ready() -> None:
        if demo:
            _run_demo(federation.data_dir, load=True, story=False)
        if smoke_test:
            _run_demo(federation.data_dir, load=False, story=True)

    try:
        federation.run(exit_when_ready=exit_when_ready or smoke_test, on_ready=on_ready)
    except FederationError as exc:
        _fail(str(exc))


def _run_demo(data_dir: Path, *, load: bool, story: bool) -> None:
    import asyncio

    from labornet.shared.demo import DemoError, FederationClient, load_demo, smoke

    async def go() -> None:
        client = FederationClient.open(data_dir)
        try:
            if load:
                await load_demo(client, log=console.print)
            if story:
                await smoke(client, log=console.print)
        finally:
            await client.aclose()

    try:
        asyncio.run(go())
    except DemoError as exc:
        _fail(f"{'smoke story' if story else 'demo data'} failed: {exc}")


@app.command("demo")
def demo_command(data_dir: DataDir = Path(".labornet")) -> None:
    """Load the demo data set into a running federation (once per data directory)."""
    _run_demo(data_dir.resolve(), load=True, story=False)


@app.command("smoke")
def smoke_command(data_dir: DataDir = Path(".labornet")) -> None:
    """Walk the smoke story across the nodes of a running federation; exit 2 at the first failed step."""
    _run_demo(data_dir.resolve(), load=False, story=True)


@federation_app.command("verify")
def federation_verify(data_dir: DataDir = Path(".labornet")) -> None:
    """Compare every node's replicas with every origin now; exit 1 if anything differs or cannot be compared."""
    from labornet.shared.federation import FederationError, verify_federation

    try:
        checks = asyncio.run(verify_federation(data_dir.resolve()))
    except FederationError as exc:
        _fail(str(exc))
        raise
    typer.echo(f"{'province':<9} {'service':<8} {'origin':<7} {'kind':<10} {'checkpoint age':>14}  state")
    for check in checks:
        age = "-" if check.checkpoint_age_s is None else f"{check.checkpoint_age_s:.1f}s"
        typer.echo(
            f"{check.province:<9} {check.service:<8} {check.origin or '-':<7} {check.kind or '-':<10} {age:>14}  "
            f"{check.state}"
        )
    out_of_sync = [check for check in checks if not check.in_sync]
    typer.echo(f"{len(checks) - len(out_of_sync)} of {len(checks)} replicas in sync")
    if out_of_sync:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
