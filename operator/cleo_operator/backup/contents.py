"""Per-table row counts and checksums: what a backup recorded and what a restore must match.

Why these and not a comparison of dumps: a verification must prove that the *database*
came back, not that a file was copied. The backup records, from the very snapshot pg_dump
dumps, each table's row count and a checksum of its rows; the verifier restores the archive
into a scratch database and computes the same values there.

The checksum (`md5-sum128-v1`): for every row, the MD5 of its text form (`t::text`), split
into two 64-bit halves; the checksum is the pair of sums of the halves over all rows,
written `<sum of high halves>:<sum of low halves>`. Sums make it independent of row order
(a restored table has its rows in another physical order, and sorting a large table costs
memory and time) while still telling apart tables that differ in any row; the server
computes it in one streaming pass without a sort. It is a check for fidelity, not a
defence against a forger: the archive's authenticity comes from its encryption.

Text forms depend on session settings (time zone, date and interval styles, float
digits, bytea output), so every session that computes checksums pins them first
(`prepare_session`); `row_security = off` makes a role without access to every row fail
loudly, as pg_dump does, instead of counting a subset; `search_path` is the catalog only,
so that no function or operator of a (hostile) restored dump is called in their place.
Table names come from the catalog and are only ever used as quoted identifiers.

Which tables: ordinary tables (partitions included, partitioned parents excluded: they hold
no rows of their own) outside the system schemas, not temporary, not owned by an extension;
rows of inheritance children count for the child only (`FROM ONLY`), as pg_dump copies
them. Large objects are not covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from cleo_operator.backup.manifest import TableStats

__all__ = ["SESSION_SETTINGS", "list_tables", "prepare_session", "table_stats"]

Connection = psycopg.Connection[TupleRow]

SESSION_SETTINGS: Final[tuple[tuple[str, str], ...]] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("row_security", "off"),
    # Names in these queries resolve in the catalog only: a restored dump's functions and
    # operators in `public` must never shadow md5(), sum(), = or the like.
    ("search_path", "pg_catalog, pg_temp"),
)

_TABLES_QUERY: Final = """
    SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r'
       AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%'
       AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (
             SELECT FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 1
"""

# Two 64-bit halves of each row's MD5 as signed bigints; sum() of bigint is numeric in
# PostgreSQL, so the sums never overflow.
_CHECKSUM_QUERY: Final = """
    SELECT count(*),
           coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text,
           coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text
      FROM (SELECT md5(t::text) AS h FROM ONLY {} AS t) AS rows
"""
_COUNT_QUERY: Final = "SELECT count(*) FROM ONLY {}"


def prepare_session(conn: Connection) -> None:
    """Pin the settings that row text forms depend on (see the module docstring)."""
    for name, value in SESSION_SETTINGS:
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def list_tables(conn: Connection) -> list[tuple[str, str, str]]:
    """(qualified name, schema, table) of every table that holds backed-up rows."""
    return [(str(q), str(s), str(t)) for q, s, t in conn.execute(_TABLES_QUERY).fetchall()]


def table_stats(
    conn: Connection,
    *,
    checksums: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, TableStats]:
    """Row counts (and checksums) of every table, as the connection's snapshot sees them.

    Call `prepare_session` first, and run inside the transaction whose snapshot counts.
    `should_stop` is asked between tables, so that a failed backup stops scanning early.
    """
    stats: dict[str, TableStats] = {}
    for qualified, schema, table in list_tables(conn):
        if should_stop():
            break
        ident = sql.Identifier(schema, table)
        # Each scan in its own savepoint: a failure (a table the role may not read) must
        # not abort the transaction, whose snapshot pg_dump may still be importing; it
        # then reports the same problem in its own words.
        with conn.transaction():
            stats[qualified] = _scan(conn, qualified, ident, checksums=checksums)
    return stats


def _scan(
    conn: Connection, qualified: str, ident: sql.Identifier, *, checksums: bool
) -> TableStats:
    if checksums:
        row = conn.execute(sql.SQL(_CHECKSUM_QUERY).format(ident)).fetchone()
        assert row is not None, qualified  # an aggregate always returns one row
        return TableStats(rows=int(row[0]), checksum=f"{row[1]}:{row[2]}")
    row = conn.execute(sql.SQL(_COUNT_QUERY).format(ident)).fetchone()
    assert row is not None, qualified
    return TableStats(rows=int(row[0]))
