"""Shared pieces of the backup integration tests (no tests here): sample data, comparisons.

The sample database covers the types CleoAI stores (text with every awkward character,
numeric, double precision with NaN and infinities, bytea, jsonb, arrays, timestamps with
and without time zone, intervals, uuids, NULLs), several schemas, a quoted table name,
a partitioned table and an empty one, and a few MB of rows.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg import sql

from tests.harness.postgres import PostgresServer

SAMPLE_SCHEMA = """
CREATE TABLE people (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    bio text,
    born date,
    balance numeric(30, 8),
    score double precision,
    created timestamptz,
    local_time timestamp,
    tags text[],
    profile jsonb,
    avatar bytea,
    active boolean,
    span interval,
    uid uuid
);
CREATE TABLE memories (
    id bigserial PRIMARY KEY,
    person bigint REFERENCES people (id),
    content text,
    embedding real[],
    payload jsonb,
    blob bytea,
    at timestamptz DEFAULT now()
);
CREATE INDEX ON memories (person);
CREATE SCHEMA "Archive";
CREATE TABLE "Archive"."Old Events" ("Kind" text, "value" numeric);
CREATE TABLE measurements (ts timestamptz NOT NULL, v numeric) PARTITION BY RANGE (ts);
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE empty_table (x int);
CREATE VIEW adults AS SELECT id, name FROM people WHERE born < '2008-01-01';
"""

SAMPLE_ROWS = """
INSERT INTO people
SELECT g,
       'person ' || g || E' \\u00e9\\u4e2d\\U0001F600 ''quoted'' "dq" \\\\ tab\\t nl\\n',
       CASE WHEN g % 7 = 0 THEN NULL ELSE repeat(md5(g::text), 6) END,
       DATE '1950-01-01' + (g * 37) % 20000,
       (g * 12345.6789)::numeric(30, 8) * CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END,
       CASE g % 50 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity'
            ELSE g / 7.0 END,
       TIMESTAMPTZ '2024-02-29 23:59:59.123456+05:30' + g * INTERVAL '17 minutes',
       TIMESTAMP '2000-01-01 00:00:00' + g * INTERVAL '1 day 3 hours',
       ARRAY['a' || g, NULL, 'with,comma', 'with "quote"'],
       jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 2 = 0),
                          'list', jsonb_build_array(g, 'x', NULL, 1.5e300)),
       decode(md5(g::text) || md5((g * 3)::text), 'hex'),
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
       g * INTERVAL '1 minute 3.5 seconds',
       md5('uuid' || g)::uuid
  FROM generate_series(1, {people}) AS g;
INSERT INTO memories (person, content, embedding, payload, blob, at)
SELECT 1 + g % {people},
       repeat('memory ' || g || ' ', 20),
       ARRAY[g / 3.0, -g / 7.0, 0.1]::real[],
       jsonb_build_object('g', g, 'text', repeat('z', g % 100)),
       decode(repeat(md5((g * 11)::text), 4), 'hex'),
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 second'
  FROM generate_series(1, {memories}) AS g;
INSERT INTO "Archive"."Old Events" SELECT 'kind ' || g % 5, g * 1.5 FROM generate_series(1, 500) g;
INSERT INTO measurements
SELECT TIMESTAMPTZ '2025-06-01 00:00:00+00' + g * INTERVAL '1 hour', g / 3.0
  FROM generate_series(1, 12000) g;
"""


def create_sample_database(
    server: PostgresServer,
    dbname: str,
    *,
    people: int = 4000,
    memories: int = 12000,
    owner: str | None = None,
    password: str | None = None,
) -> None:
    """Fill the existing, empty database `dbname` (a few MB at the default sizes).

    With `owner` (and its `password`), the objects are created by that role.
    """
    user = owner or server.superuser
    with psycopg.connect(server.dsn(dbname, user=user, password=password), autocommit=True) as conn:
        conn.execute(SAMPLE_SCHEMA)
        # Several statements need the simple query protocol: no server-side parameters.
        rows = SAMPLE_ROWS.replace("{people}", str(int(people)))
        conn.execute(rows.replace("{memories}", str(int(memories))))


def create_database(server: PostgresServer, name: str, *, owner: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
    server.execute(statement)


def drop_database(server: PostgresServer, name: str) -> None:
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def user_relations(server: PostgresServer, dbname: str) -> list[str]:
    """Tables, views and sequences outside the system schemas: empty for an untouched db."""
    rows = server.execute(
        """
        SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
         ORDER BY 1
        """,
        dbname=dbname,
    )
    return [str(r[0]) for r in rows]


def table_contents(server: PostgresServer, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as Python values, in a stable order.

    An independent check of equality: it compares what psycopg decodes, value by value,
    instead of trusting the checksums the code under test computes.
    """
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        tables = conn.execute(
            """
            SELECT n.nspname, c.relname FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1, 2
            """
        ).fetchall()
        contents = {}
        for schema, table in tables:
            ident = sql.Identifier(schema, table)
            rows = conn.execute(
                sql.SQL("SELECT * FROM ONLY {} AS t ORDER BY t::text").format(ident)
            ).fetchall()
            contents[f"{schema}.{table}"] = [tuple(map(_comparable, row)) for row in rows]
        return contents


def _comparable(value: Any) -> Any:
    # NaN is not equal to itself; as a marker it compares like any other value.
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


def database_size(server: PostgresServer, dbname: str) -> int:
    rows = server.execute("SELECT pg_database_size(%s)", (dbname,))
    return int(rows[0][0])
