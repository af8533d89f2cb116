"""The text index of open vacancies also holds every CJK character of their text, for a search of a lone character.

A search for a lone CJK character (``厨``, ``焊``) has no bigram to look up; until now it was a ``LIKE`` over
``search_tokens`` of every candidate the other filters left, which at 1,000,000 vacancies took 53 ms at the median
and 76 ms at p95 (the target is 50 ms at p95). ``search_tokens`` holds every CJK character of the searchable text
inside its bigrams, so the characters of ``search_tokens`` (without spaces, Latin letters and digits) as lexemes are
exactly the characters a vacancy can be found by.

They are an expression of the index, not a stored column: a stored column of them (tried first) made the table a
quarter larger and every walk along a sort-order index read a third more pages, so that other searches got slower.
And they are a second column of the text index of open vacancies (``ix_vacancy_open_search``, which replaces
``ix_vacancy_open_search_vector`` of jobs_0005), not an index of their own: one GIN scan intersects a character
with the words and facets, where two indexes made the planner intersect two bitmaps of 100,000 rows each and
recompute the expression for every row of a page the bitmaps had lost (ADR 31). The expression must stay the one
``labornet.jobs.adapters.search.CHARACTERS`` writes, or the planner does not use it.

SQLite keeps ``LIKE`` (its FTS5 table indexes whole tokens), and so does a search of closed vacancies. Building the
index at 1,000,000 vacancies took about half a minute here; the table is analysed again so that the planner knows
the expression.

Revision ID: jobs_0012
Revises: jobs_0011
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0012"
down_revision: str | None = "jobs_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHARACTERS = (
    "array_to_tsvector(string_to_array(translate(search_tokens, ' 0123456789abcdefghijklmnopqrstuvwxyz', ''), NULL))"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX ix_vacancy_open_search ON vacancy USING gin (search_vector, ({CHARACTERS})) "
            "WHERE status = 'open'"
        )
        op.execute("DROP INDEX ix_vacancy_open_search_vector")
        op.execute("ANALYZE vacancy")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_vacancy_open_search_vector ON vacancy USING gin (search_vector) WHERE status = 'open'"
        )
        op.execute("DROP INDEX ix_vacancy_open_search")
