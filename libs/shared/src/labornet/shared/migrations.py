"""Alembic plumbing shared by the services.

Each service keeps its own migrations package (``labornet.<service>.migrations``) whose ``env.py`` calls
:func:`run_env`. Platform tables (outbox, inbox, quarantine) are created by versioned functions here, called
from each service's own revisions, so a change to them is a new function and a new revision — never an edit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.db import Id

_MIGRATION_LOCK = 0x4C4E4D47  # "LNMG": serialises concurrent replicas migrating one PostgreSQL database


def alembic_config(script_location: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, script_location: str, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    command.upgrade(alembic_config(script_location, connection), revision)


# Alembic keeps its migration context in module globals: two services migrating in one process (node mode,
# tests) must take turns.
_in_process = asyncio.Lock()


async def upgrade(engine: AsyncEngine, script_location: str, revision: str = "head") -> None:
    """Apply a service's migrations up to ``revision`` in one transaction."""
    async with _in_process, engine.begin() as connection:
        await connection.run_sync(_upgrade, script_location, revision)


def run_env(target_metadata: Sequence[MetaData]) -> None:
    """Body of every service's ``env.py``: run migrations on the connection handed over by :func:`upgrade`."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through labornet.shared.migrations.upgrade (or `labornet migrate`)")
    context.configure(
        connection=connection,
        target_metadata=list(target_metadata),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Platform tables, version 1 ------------------------------------------------------------------------------


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade_platform_v1() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("message_key", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("stream", sa.String(300), nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=True),
        _timestamp("created_at"),
        _timestamp("sent_at", nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
        sa.UniqueConstraint("stream", "seq", name="uq_outbox_stream_seq"),
    )
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "outbox_stream",
        sa.Column("stream", sa.String(300), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("stream", name="pk_outbox_stream"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("origin_province", sa.String(6), nullable=False),
        sa.Column("stream", sa.String(300), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        _timestamp("event_time"),
        _timestamp("applied_at"),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )
    op.create_index("ix_inbox_stream_seq", "inbox", ["consumer", "stream", "seq"])
    op.create_table(
        "quarantine",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("origin_province", sa.String(6), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("message_key", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _timestamp("quarantined_at"),
        _timestamp("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("consumer", "fingerprint", name="uq_quarantine_record"),
    )
    op.create_index("ix_quarantine_status", "quarantine", ["status", "id"])


def downgrade_platform_v1() -> None:
    op.drop_table("quarantine")
    op.drop_table("inbox")
    op.drop_table("outbox_stream")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")


# Platform tables, version 2: receipts for directed messages, the remembered broker -----------------------


def upgrade_platform_v2() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("destination", sa.String(6), nullable=True))
        batch.add_column(sa.Column("expects_receipt", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(_timestamp("acked_at", nullable=True))
        batch.add_column(sa.Column("receipt_outcome", sa.String(20), nullable=True))
        batch.add_column(sa.Column("resends", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(_timestamp("resend_at", nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("expects_receipt", server_default=None)
        batch.alter_column("resends", server_default=None)
    op.create_index(
        "ix_outbox_awaiting_receipt",
        "outbox",
        ["resend_at"],
        postgresql_where=sa.text("expects_receipt IS true AND acked_at IS NULL"),
        sqlite_where=sa.text("expects_receipt IS 1 AND acked_at IS NULL"),
    )
    op.create_table(
        "bus_state",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", name="pk_bus_state"),
    )


def downgrade_platform_v2() -> None:
    op.drop_table("bus_state")
    op.drop_index("ix_outbox_awaiting_receipt", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in ("resend_at", "resends", "receipt_outcome", "acked_at", "expects_receipt", "destination"):
            batch.drop_column(column)
