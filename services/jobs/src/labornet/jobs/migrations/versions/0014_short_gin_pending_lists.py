"""The text indexes of vacancies keep a pending list of at most 1 MB, not PostgreSQL's 4 MB.

A GIN index with ``fastupdate`` (the default) puts new entries in a pending list and merges the list into the index
when it outgrows ``gin_pending_list_limit``. The merge is done by the insert that overflowed the list, in its own
transaction. Vacancies are written into two GIN indexes (``ix_vacancy_search_vector``, ``ix_vacancy_open_search``),
by each province's publications, each partner's events applied to the replica and each import batch. So every
few thousand vacancies one writing transaction carried the merge of 4 MB of entries: 50–100 ms with the node's
other writes queued behind it (issue 12). Posting at Zhejiang at 500/s and reading at Sichuan, those merges were the
spikes of the latency: every 4–5 s at one node or the other, and the p99 of the whole run. Autovacuum, which also
merges pending lists, comes only after many more inserts.

At 1 MB a merge holds a quarter of the entries, four times as often. The work is about the same: the database
server's CPU over the runs was within their spread, 6.6–7.7 s at 1 MB and 6.7–7.5 s at 4 MB. A search also reads
the whole pending list of the index it uses, so a shorter list costs searches less. Measured with 256 kB and 64 kB
as well, the p99 was no better than at 1 MB: the spikes were gone at each of these, and what is left is the queue of
a busy node.

A storage parameter of the index, so that the limit is the schema's and not a setting of each database server.
Setting it rewrites nothing: it takes an ACCESS EXCLUSIVE lock on each index for the moment of the catalog update,
so queries that plan on the vacancy table wait for that moment, not for a rebuild. SQLite has no GIN index and
nothing changes there.

Revision ID: jobs_0014
Revises: jobs_0013
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0014"
down_revision: str | None = "jobs_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = ("ix_vacancy_search_vector", "ix_vacancy_open_search")
PENDING_LIST_KB = 1024


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in INDEXES:
            op.execute(f"ALTER INDEX {index} SET (gin_pending_list_limit = {PENDING_LIST_KB})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in INDEXES:
            op.execute(f"ALTER INDEX {index} RESET (gin_pending_list_limit)")
