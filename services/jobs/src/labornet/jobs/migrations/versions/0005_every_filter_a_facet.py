"""Every equality and prefix filter of vacancy search becomes a facet lexeme of the PostgreSQL text index.

jobs_0004 put the owner province and the status into ``search_vector``; this adds the rest of the filters a job
seeker combines with words, so that one GIN lookup answers all of them (ADR 7):

* ``#d<digits>`` — the work location's division at each level: 510104 gives ``#d51``, ``#d5101`` and
  ``#d510104`` (a search for 510100 asks for ``#d5101``: the city and everything in it);
* ``#o<digits>`` — every prefix of the occupation code: 5120 gives ``#o5``, ``#o51``, ``#o512``, ``#o5120`` (a
  major group finds its unit groups);
* ``#e<type>`` — the employment type; ``#g<group>`` — each target group;
* ``#t<n>`` — the week it was posted (whole weeks since 1970-01-01 UTC): "posted in the last 30 days" is then the
  five or six weeks it spans, intersected in the index, and only their vacancies are checked row by row.

Open vacancies — what a job seeker searches unless asked otherwise — get a text index of their own
(``ix_vacancy_open_search_vector``, partial on ``status = 'open'``): a search of open vacancies then reads neither
the posting list of ``#sopen`` (most of the table: measured at 1M vacancies, intersecting it cost 10-20 ms of a
25 ms lookup) nor the closed vacancies that pile up in a replica over the years.

Salary overlap is a range and stays a column condition, as does "posted since" (the weeks only narrow it). The
facets are computed by the immutable function ``vacancy_facets`` so that the generated column can call it; user text
never yields a ``#`` lexeme. SQLite keeps its FTS5 table and filters by column.

Revision ID: jobs_0005
Revises: jobs_0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0005"
down_revision: str | None = "jobs_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_FUNCTION = """
CREATE FUNCTION vacancy_facets(
    owner_province text, status text, division_code text, occupation_code text, employment_type text,
    target_groups json, posted_at timestamptz
) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
AS $$
    SELECT array_to_tsvector(
        ARRAY[
            '#p' || owner_province, '#s' || status, '#e' || employment_type,
            '#d' || left(division_code, 2), '#d' || left(division_code, 4), '#d' || division_code,
            '#t' || floor(extract(epoch FROM posted_at) / 604800)::bigint
        ]
        || ARRAY(SELECT '#o' || left(occupation_code, n) FROM generate_series(1, length(occupation_code)) AS n)
        || ARRAY(SELECT '#g' || g FROM json_array_elements_text(target_groups) AS g)
    )
$$
"""
WITH_ALL_FACETS = (
    "to_tsvector('simple', search_tokens) || vacancy_facets(owner_province, status, division_code, "
    "occupation_code, employment_type, target_groups, posted_at)"
)
PROVINCE_AND_STATUS = (
    "to_tsvector('simple', search_tokens) || array_to_tsvector(ARRAY['#p' || owner_province, '#s' || status])"
)


def _recreate(expression: str) -> None:
    op.execute("ALTER TABLE vacancy DROP COLUMN search_vector")  # drops ix_vacancy_search_vector with it
    op.execute(f"ALTER TABLE vacancy ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({expression}) STORED")
    op.execute("CREATE INDEX ix_vacancy_search_vector ON vacancy USING gin (search_vector)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        _recreate(WITH_ALL_FACETS)
        op.execute(
            "CREATE INDEX ix_vacancy_open_search_vector ON vacancy USING gin (search_vector) WHERE status = 'open'"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _recreate(PROVINCE_AND_STATUS)  # drops ix_vacancy_open_search_vector with the column
        op.execute("DROP FUNCTION vacancy_facets(text, text, text, text, text, json, timestamptz)")
