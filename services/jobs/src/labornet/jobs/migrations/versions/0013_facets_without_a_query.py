"""The facet lexemes of a vacancy are computed by PL/pgSQL from one expression, not by an SQL function's queries.

``vacancy_facets`` (jobs_0005) feeds the stored generated column ``search_vector``, so it runs for every vacancy
written: each one a province publishes, each partner's event applied to the replica, each import row. As an SQL
function with sub-queries (``generate_series`` for the occupation's prefixes, ``json_array_elements_text`` for the
target groups) it cannot be inlined, and PostgreSQL parses, plans and starts its body again for every row it
computes (``fmgr_sql``). Measured on this machine with single-row inserts one after the other, it took 134–262 µs
a row, where an insert without facets took 18–26 µs. Posting vacancies at Zhejiang at 500/s, the generated column
was nearly a third of the database's time (issue 12).

The same lexemes from one expression without a query, in PL/pgSQL: the function is compiled once per connection and
its expression is evaluated as a *simple expression* with its plan kept, 28–42 µs a row in the same measurement.

* The occupation's prefixes are ``left(code, n)`` for n = 1..10, the column's whole width; a code shorter than ten
  gives its whole self for the longer ones, and ``array_to_tsvector`` keeps each lexeme once.
* The target groups are read from the JSON text: brackets, quotes and blanks removed, each name between commas
  prefixed with ``#g``. Target groups are the names of ``TargetGroup`` (lower-case letters and hyphens), checked by
  the API, the import and every partner's event before a row is written, so the text holds no escape, comma or
  quote of its own.

The result is the same tsvector for every row (``services/jobs/tests/test_search.py`` compares the two functions
over every shape of row), so the stored column and its indexes are kept as they are: nothing is rewritten.

Revision ID: jobs_0013
Revises: jobs_0012
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0013"
down_revision: str | None = "jobs_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = """vacancy_facets(
    owner_province text, status text, division_code text, occupation_code text, employment_type text,
    target_groups json, posted_at timestamptz
) RETURNS tsvector"""

ONE_EXPRESSION = f"""
CREATE OR REPLACE FUNCTION {SIGNATURE}
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
AS $$
BEGIN
    RETURN array_to_tsvector(
        ARRAY[
            '#p' || owner_province, '#s' || status, '#e' || employment_type,
            '#d' || left(division_code, 2), '#d' || left(division_code, 4), '#d' || division_code,
            '#t' || floor(extract(epoch FROM posted_at) / 604800)::bigint,
            '#o' || left(occupation_code, 1), '#o' || left(occupation_code, 2), '#o' || left(occupation_code, 3),
            '#o' || left(occupation_code, 4), '#o' || left(occupation_code, 5), '#o' || left(occupation_code, 6),
            '#o' || left(occupation_code, 7), '#o' || left(occupation_code, 8), '#o' || left(occupation_code, 9),
            '#o' || left(occupation_code, 10)
        ]
        || string_to_array(
            regexp_replace(regexp_replace(target_groups::text, '[][[:space:]"]', '', 'g'), '([^,]+)', '#g\\1', 'g'),
            ','
        )
    );
END
$$
"""

# jobs_0005's function, as it was
WITH_QUERIES = f"""
CREATE OR REPLACE FUNCTION {SIGNATURE}
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ONE_EXPRESSION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(WITH_QUERIES)
