"""Vacancy text search: an FTS5 index on SQLite, a tsvector column with a GIN index on PostgreSQL.

Both index ``vacancy.search_tokens`` (CJK bigrams and Latin words, see ``labornet.jobs.domain.text``); the
queries are in ``labornet.jobs.adapters.search``.

* SQLite: ``vacancy_search`` is an external-content FTS5 table over ``search_tokens`` (``unicode61`` splits the
  space-separated tokens), keyed by the vacancy's implicit rowid and kept in step by triggers. Only positions-free
  term lookups are needed, so ``detail=none`` keeps it small. Caveats for later migrations: a batch rebuild of
  ``vacancy`` drops these triggers and renumbers rowids, and so may ``VACUUM`` (rowids are not stable without an
  INTEGER PRIMARY KEY); afterwards recreate the triggers and run ``INSERT INTO vacancy_search(vacancy_search)
  VALUES('rebuild')``.
* PostgreSQL: a stored generated column ``search_vector`` (``simple`` configuration: no stemming, no stop words)
  with a GIN index, plus btree indexes for the sort orders within a province.

Revision ID: jobs_0003
Revises: jobs_0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0003"
down_revision: str | None = "jobs_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = (
    """
    CREATE VIRTUAL TABLE vacancy_search USING fts5(
        search_tokens, content='vacancy', content_rowid='rowid', tokenize='unicode61', detail='none'
    )
    """,
    """
    CREATE TRIGGER vacancy_search_insert AFTER INSERT ON vacancy BEGIN
        INSERT INTO vacancy_search (rowid, search_tokens) VALUES (new.rowid, new.search_tokens);
    END
    """,
    """
    CREATE TRIGGER vacancy_search_delete AFTER DELETE ON vacancy BEGIN
        INSERT INTO vacancy_search (vacancy_search, rowid, search_tokens)
        VALUES ('delete', old.rowid, old.search_tokens);
    END
    """,
    """
    CREATE TRIGGER vacancy_search_update AFTER UPDATE OF search_tokens ON vacancy
    WHEN old.search_tokens IS NOT new.search_tokens BEGIN
        INSERT INTO vacancy_search (vacancy_search, rowid, search_tokens)
        VALUES ('delete', old.rowid, old.search_tokens);
        INSERT INTO vacancy_search (rowid, search_tokens) VALUES (new.rowid, new.search_tokens);
    END
    """,
    "INSERT INTO vacancy_search (vacancy_search) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER vacancy_search_update",
    "DROP TRIGGER vacancy_search_delete",
    "DROP TRIGGER vacancy_search_insert",
    "DROP TABLE vacancy_search",
)

POSTGRESQL_UPGRADE = (
    """
    ALTER TABLE vacancy ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_tokens)) STORED
    """,
    "CREATE INDEX ix_vacancy_search_vector ON vacancy USING gin (search_vector)",
    "CREATE INDEX ix_vacancy_owner_status_posted ON vacancy (owner_province, status, posted_at, id)",
    "CREATE INDEX ix_vacancy_owner_status_salary ON vacancy (owner_province, status, salary_max, id)",
)
POSTGRESQL_DOWNGRADE = (
    "DROP INDEX ix_vacancy_owner_status_salary",
    "DROP INDEX ix_vacancy_owner_status_posted",
    "DROP INDEX ix_vacancy_search_vector",
    "ALTER TABLE vacancy DROP COLUMN search_vector",
)


def _statements(sqlite: Sequence[str], postgresql: Sequence[str]) -> Sequence[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite
    if dialect == "postgresql":
        return postgresql
    raise NotImplementedError(f"vacancy search supports SQLite and PostgreSQL, not {dialect}")


def upgrade() -> None:
    for statement in _statements(SQLITE_UPGRADE, POSTGRESQL_UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(SQLITE_DOWNGRADE, POSTGRESQL_DOWNGRADE):
        op.execute(statement)
