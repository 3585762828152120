"""ConnectionInfo: the password never in reprs or argv; child tools get exactly our settings."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from cleo_operator.backup.connection import ConnectionInfo, libpq_environment
from cleo_operator.data.sites import SiteConfig

PASSWORD = "s3cr:et\\pa'ss word"


def test_password_never_shows() -> None:
    info = ConnectionInfo(host="db", dbname="cleo_a", user="cleo_a", password=PASSWORD)
    assert PASSWORD not in repr(info)
    assert PASSWORD not in str(info)
    assert "s3cr" not in info.where
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(info)
    assert info.psycopg_kwargs()["password"] == PASSWORD


def test_passfile_carries_the_password_and_vanishes() -> None:
    info = ConnectionInfo(host="db", port=5433, dbname="cleo_a", user="cle:o", password=PASSWORD)
    base = {"PATH": "/bin", "PGPASSWORD": "inherited", "PGHOST": "elsewhere", "PGSERVICE": "x"}
    with libpq_environment(info, base=base) as env:
        passfile = Path(env["PGPASSFILE"])
        assert passfile.stat().st_mode & 0o077 == 0
        # ':' and '\' are escaped as the passfile format requires.
        assert passfile.read_text() == "*:*:*:cle\\:o:s3cr\\:et\\\\pa'ss word\n"
        assert env["PGHOST"] == "db"
        assert env["PGPORT"] == "5433"
        assert env["PGDATABASE"] == "cleo_a"
        assert env["PGUSER"] == "cle:o"
        assert env["PATH"] == "/bin"
        # Nothing of the parent's libpq settings leaks into the child.
        assert "PGPASSWORD" not in env
        assert "PGSERVICE" not in env
        assert PASSWORD not in "".join(env.values())
    assert not passfile.exists()
    assert not passfile.parent.exists()


def test_no_password_means_no_passfile() -> None:
    info = ConnectionInfo(host="/run/postgresql", dbname="d", user="u")
    with libpq_environment(info, base={}) as env:
        assert "PGPASSFILE" not in env
        assert "PGPASSWORD" not in env


def test_from_dsn_and_url() -> None:
    info = ConnectionInfo.from_dsn("host=127.0.0.1 port=6543 dbname=x user=u password='p w'")
    assert (info.host, info.port, info.dbname, info.user, info.password) == (
        "127.0.0.1",
        6543,
        "x",
        "u",
        "p w",
    )
    url = ConnectionInfo.from_dsn("postgresql://u:p%40ss@db.example:5432/x?sslmode=require")
    assert (url.host, url.password, url.sslmode) == ("db.example", "p@ss", "require")
    with pytest.raises(ValueError, match=r"\['options'\] are not supported"):
        ConnectionInfo.from_dsn("host=h dbname=x user=u options=-cfoo=bar")
    with pytest.raises(ValueError, match="user is required"):
        ConnectionInfo.from_dsn("host=h dbname=x")
    with pytest.raises(ValueError, match="not a valid") as caught:
        ConnectionInfo.from_dsn("host=h password='unterminated")
    assert "unterminated" not in str(caught.value)


def test_from_environment() -> None:
    env = {
        "PGHOST": "pg",
        "PGPORT": "5544",
        "PGDATABASE": "cleo_t",
        "PGUSER": "cleo_t",
        "PGPASSWORD": PASSWORD,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/etc/ca.pem",
    }
    info = ConnectionInfo.from_environment(env)
    assert (info.host, info.port, info.dbname, info.password, info.sslmode, info.sslrootcert) == (
        "pg",
        5544,
        "cleo_t",
        PASSWORD,
        "verify-full",
        "/etc/ca.pem",
    )
    with pytest.raises(ValueError, match="PGDATABASE is required"):
        ConnectionInfo.from_environment({"PGHOST": "pg", "PGUSER": "u"})
    with pytest.raises(ValueError, match="PGPORT must be an integer"):
        ConnectionInfo.from_environment({**env, "PGPORT": "fifty"})


def test_for_site() -> None:
    site = SiteConfig(
        name="eu", host="pg-eu", port=5439, sslmode="verify-full", ssl_root_cert="/ca"
    )
    info = ConnectionInfo.for_site(site, dbname="cleo_a", user="cleo_a", password="pw")
    assert (info.host, info.port, info.sslmode, info.sslrootcert) == (
        "pg-eu",
        5439,
        "verify-full",
        "/ca",
    )
    assert info.with_dbname("other").dbname == "other"
    assert info.with_dbname("other").password == "pw"
