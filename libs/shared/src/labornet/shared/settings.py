"""Node and service configuration.

Every setting is read from the environment with the prefix ``LABORNET_`` (for example
``LABORNET_PROVINCE=510000``, ``LABORNET_DATABASE_URL=postgresql+asyncpg://...``) or from a ``.env`` file.
Nothing an operator may need to change is buried in code.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labornet.shared.workdays import Calendars, WorkCalendar

ServiceName = Literal["jobs", "insurance", "brands", "rights"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("jobs", "insurance", "brands", "rights")

ENV_PREFIX = "LABORNET_"


class Settings(BaseSettings):
    """Configuration of one service of one province node."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    province: str = Field("510000", description="GB/T 2260 code of the province this node serves")
    service: ServiceName = Field("jobs", description="which of the four services this process runs")
    data_dir: Path = Field(Path(".labornet"), description="root for SQLite files and keys in the embedded mode")
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL; empty means a SQLite file under data_dir "
        "(sqlite+aiosqlite:///...); PostgreSQL via postgresql+asyncpg://",
    )
    migrate_on_start: bool = Field(True, description="apply alembic migrations when the service starts")

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    kafka_enable_idempotence: bool = Field(
        False, description="idempotent producer; on for Apache Kafka, off for the embedded broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle of the cluster (e.g. Strimzi's cluster CA)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate for mTLS (Strimzi KafkaUser)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key for mTLS")
    kafka_fetch_max_wait_ms: int = Field(
        10, ge=1, description="consumer fetch wait while records come; latency is about half of it"
    )
    kafka_fetch_idle_wait_ms: int = Field(
        1,
        ge=1,
        description="consumer fetch wait once no record came for kafka_fetch_idle_after_s. The embedded broker spends "
        "CPU on every partition for as long as a fetch waits, does not answer a waiting fetch when a record arrives, "
        "and never returns records to a fetch that may not wait at all (0), so there an idle fetch waits 1 ms; with "
        "Apache Kafka, which answers on arrival, 500 reads the first record after a quiet spell at once",
    )
    kafka_fetch_idle_pause_ms: int = Field(
        400,
        ge=0,
        le=5000,
        description="once no record came for kafka_fetch_idle_after_s: how often a process asks the broker, in one "
        "request, whether records came to the partitions of its idle consumers, and wakes the consumers they came "
        "to. The first record after a quiet spell is read within about this (the federation promises a vacancy in "
        "another province within a second); 0 turns this request off",
    )
    kafka_fetch_idle_fetch_every_ms: int = Field(
        5000,
        ge=0,
        description="how far apart an idle consumer's own fetches are when no record came; at most "
        "kafka_fetch_idle_pause_ms turns the process's single request off and every consumer fetches every "
        "kafka_fetch_idle_pause_ms (both 0: no pause at all)",
    )
    kafka_fetch_idle_fetch_heard_every_ms: int = Field(
        30_000,
        ge=0,
        description="how far apart an idle consumer's own fetches are while the doorbell (kafka_fetch_idle_pause_ms) "
        "keeps reading the end of every partition it holds: the doorbell would ring it when one grows, so its own "
        "fetches are only a fallback. A consumer with a partition the doorbell did not read within "
        "kafka_fetch_idle_fetch_every_ms fetches then",
    )
    kafka_fetch_idle_after_s: float = Field(2.0, ge=0, description="quiet time before the idle pacing begins")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1000, description="consumer group session timeout; the embedded broker's join takes a share of it"
    )
    kafka_heartbeat_interval_ms: int = Field(3_000, ge=100)
    kafka_topic_partitions: int = Field(3, ge=1)
    kafka_topic_replication: int = Field(1, ge=1)
    kafka_metadata_max_age_ms: int = Field(
        300_000,
        ge=1000,
        description="how often consumers refresh metadata on their own. The broker watch (every "
        "broker_check_interval_s) makes them refresh at once when topics, partitions or the cluster change, so new "
        "partitions are read within a check; this is the fallback",
    )
    broker_check_interval_s: float = Field(
        5.0, gt=0, description="how often a service asks the broker whether it answers and still holds its log"
    )
    broker_unready_after_s: float = Field(
        20.0, gt=0, description="/readyz answers 503 once the broker has not answered for this long"
    )
    readyz_timeout_s: float = Field(
        5.0, gt=0, description="/readyz: how long the database may take to read its tables before it counts as down"
    )
    consumer_lag_interval_s: float = Field(
        5.0, gt=0, description="how often consumers ask the broker for end offsets to measure their lag"
    )
    broker_offsets_check_interval_s: float = Field(
        30.0, gt=0, description="how often end offsets are compared with the last reading (a log that went back)"
    )
    kafka_create_topics: bool = Field(
        True, description="create missing topics at start (embedded/dev); off where Strimzi KafkaTopics own them"
    )

    keys_dir: Path | None = Field(None, description="directory with this node's keys; default data_dir/keys/<province>")
    signing_key_path: Path | None = Field(None, description="Ed25519 private key (PEM) used to sign events")
    signing_key_id: str | None = Field(None, description="key id of the signing key as listed in the trust list")
    trust_list_path: Path | None = Field(
        None, description="federation trust list (JSON); default data_dir/trust-list.json"
    )
    trust_reload_interval_s: float = Field(1.0, gt=0, description="how often the trust-list file is checked")
    trust_clock_skew_s: float = Field(300.0, ge=0, description="how far in the future an event time may lie")
    federation_path: Path | None = Field(
        None, description="where partner nodes listen (JSON written by `labornet up`); default data_dir/federation.json"
    )
    peer_urls: dict[str, str] = Field(
        default_factory=dict,
        description="base URLs of this service at partner provinces (JSON, province → URL); "
        "where a province is missing, the federation file is read",
    )
    antientropy_interval_s: float = Field(
        300.0, gt=0, description="how often each replica is compared with every origin (ADR 0008)"
    )
    antientropy_first_round_s: float = Field(15.0, ge=0, description="delay of the first round after start-up")
    antientropy_jitter: float = Field(0.2, ge=0, lt=1, description="spread of the interval, as a fraction of it")
    antientropy_range_rows: int = Field(1000, ge=1, le=100_000, description="rows per range of an origin's digest")
    antientropy_digest_ttl_s: float = Field(
        60.0, ge=0, description="how long an origin reuses its digest for the partners that ask"
    )
    antientropy_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request to an origin")
    divisions_path: Path | None = Field(None, description="division registry (JSON); default: the bundled file")
    jobs_sweep_interval_s: float = Field(60.0, gt=0, description="jobs: how often closing dates are checked")
    jobs_brands_url: str | None = Field(
        None,
        description="jobs: base URL of this node's brands service, asked whether a vacancy's brand_id exists "
        "(ADR 0010); default: this province's brands service in the federation file",
    )
    jobs_brands_timeout_s: float = Field(5.0, gt=0, description="jobs: HTTP timeout of a brand lookup")
    insurance_auto_answer: bool = Field(
        False, description="insurance: answer contact letters at once from the records, without an officer"
    )
    insurance_sweep_interval_s: float = Field(15.0, gt=0, description="insurance: how often deadlines are counted")
    insurance_config_max_age_s: float = Field(
        5.0,
        ge=0,
        description="insurance: how long a process keeps its copy of the benefit configuration, i.e. how soon a "
        "change made through another replica applies (0: read it in every step)",
    )
    provinces_path: Path | None = Field(None, description="province registry (JSON); default: the bundled nine regions")

    auth_jwks_url: str | None = Field(None, description="production: JWKS URL of the identity provider")
    auth_public_key_path: Path | None = Field(None, description="dev: public key (PEM) of the node's dev token issuer")
    auth_issuer: str | None = Field(None, description="expected iss claim; default labornet:<province>")
    auth_audience: str = Field("labornet", description="expected aud claim")
    auth_partner_issuers: list[str] = Field(
        default_factory=list,
        description="iss claims of the partner provinces' issuers (JSON list): their tokens answer 403 naming this "
        "node's issuer, not 401; default labornet:<code> of every federation member",
    )

    request_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body; a larger one is refused with 413 before it is read"
    )
    request_max_import_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="largest body of a bulk import (records' CSV, vacancy import)"
    )
    rate_limit_enabled: bool = Field(True, description="answer 429 with Retry-After beyond the rate limits below")
    rate_limit_per_address: str = Field(
        "60000/minute", description="requests of one client address (limits notation: N/second|minute|hour|day)"
    )
    rate_limit_auth_failures_per_address: str = Field(
        "60/minute", description="failed authentications (missing, bad or expired tokens) of one client address"
    )
    rate_limit_per_principal: str = Field("30000/minute", description="requests of one authenticated caller")
    rate_limit_storage: str = Field(
        "memory://", description="where the counts are kept (limits storage URI); memory:// counts per process"
    )

    outbox_batch_size: int = Field(200, ge=1, le=10_000)
    outbox_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description="relay fallback poll, and how often it updates its backlog and receipt gauges while idle; a commit "
        "that wrote outbox rows wakes the relay of its process at once",
    )
    outbox_max_backoff_s: float = Field(5.0, gt=0, description="relay backoff ceiling while the broker is down")
    outbox_retention_hours: float = Field(168.0, gt=0, description="how long published outbox rows are kept")
    outbox_republish_window_s: float = Field(
        3600.0, ge=0, description="when the broker lost its log, rows published this far back are published again"
    )
    receipt_wait_s: float = Field(
        15.0, gt=0, description="directed messages: first wait for a receipt before sending again (then doubling)"
    )
    receipt_wait_max_s: float = Field(600.0, gt=0, description="directed messages: longest wait between resends")

    inbox_batch_size: int = Field(
        100,
        ge=1,
        le=1000,
        description="records of one partition applied in one transaction, of those whose handler applies them one at "
        "a time (a failing run is applied one by one; 1: no runs)",
    )
    inbox_batched_run_size: int = Field(
        500,
        ge=1,
        le=5000,
        description="records of one partition applied in one transaction when their handler applies them together "
        "(partners' replicas, receipts): a fixed number of statements per run, so a longer run costs each less",
    )
    inbox_partition_concurrency: int = Field(
        4,
        ge=1,
        le=32,
        description="partitions of one fetch of partners' events (replicas) applied at once, each in its own "
        "transactions (a server database; SQLite, with one writer, and consumers of directed messages apply one "
        "partition at a time)",
    )
    inbox_max_attempts: int = Field(3, ge=1, description="attempts before an event is dead-lettered")
    inbox_retry_backoff_s: float = Field(0.2, ge=0, description="first retry delay; doubles each attempt")
    quarantine_max_record_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="how much of a quarantined record (key, header names and values, payload) is stored and "
        "dead-lettered; the rest is cut, the SHA-256 of the whole record is kept. Keep it below the broker's "
        "maximum message size so the dead-letter copy can be published",
    )
    replica_max_version_jump: int = Field(
        0,
        ge=0,
        description="replicas: quarantine an event whose version is more than this far ahead of the held copy "
        "(0: no limit; the version can never exceed the event's stream sequence number in any case)",
    )

    holidays: list[date] = Field(
        default_factory=list,
        description="national days off beyond the official schedule of chinesecalendar (JSON list of ISO dates)",
    )
    extra_workdays: list[date] = Field(
        default_factory=list, description="national working days beyond the official schedule (JSON list of ISO dates)"
    )
    calendar_path: Path | None = Field(
        None,
        description="calendar file (JSON): regional holidays and working days per province, and national schedules "
        "of years chinesecalendar does not know yet (docs/operations/calendars.md); default: none",
    )

    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("rate_limit_per_address", "rate_limit_auth_failures_per_address", "rate_limit_per_principal")
    @classmethod
    def _rate_limit_is_readable(cls, value: str) -> str:
        from limits import parse

        parse(value)  # ValueError naming the text when it is not a rate limit
        return value

    @field_validator("province")
    @classmethod
    def _province_is_division_code(cls, value: str) -> str:
        if len(value) != 6 or not value.isdigit() or not value.endswith("0000"):
            raise ValueError(f"province {value!r}: expected a 6-digit GB/T 2260 province code such as 510000")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        keys = self.keys_dir or self.data_dir / "keys" / self.province
        self.keys_dir = keys
        if self.signing_key_path is None:
            self.signing_key_path = keys / "signing.key"
        if self.auth_public_key_path is None and self.auth_jwks_url is None:
            self.auth_public_key_path = keys / "token.pub"
        if self.federation_path is None:
            self.federation_path = self.data_dir / "federation.json"
        if self.trust_list_path is None:
            self.trust_list_path = self.data_dir / "trust-list.json"
        if self.auth_issuer is None:
            self.auth_issuer = f"labornet:{self.province}"
        if not self.database_url:
            path = (self.data_dir / "db" / self.province / f"{self.service}.sqlite3").resolve()
            self.database_url = f"sqlite+aiosqlite:///{path}"
        return self

    def peer_url(self, province: str, service: str) -> str | None:
        """Base URL of a partner's service: ``peer_urls`` (for this service), else the federation file."""
        import json

        if service == self.service and province in self.peer_urls:
            return self.peer_urls[province]
        if self.federation_path is None or not self.federation_path.exists():
            return None
        document = json.loads(self.federation_path.read_text("utf-8"))
        url = document.get("provinces", {}).get(province, {}).get("services", {}).get(service)
        return str(url) if url else None

    def calendars(self) -> Calendars:
        """Every province's working-day calendar: a deadline is counted on the calendar of the province it binds."""
        return Calendars.configured(self.holidays, self.extra_workdays, self.calendar_path)

    def calendar(self) -> WorkCalendar:
        """This node's province's working-day calendar."""
        return self.calendars().of(self.province)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]
