"""The ledger on both backends: one schema, the same answers, clear errors, a verified copy.

PostgreSQL tests run against a real server (see ``postgres_url`` in conftest.py).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.errors import ConfigError, LedgerError
from pipeline.store import Ledger, PublishRecord, open_database, open_ledger
from pipeline.store.copy import table_counts
from pipeline.store.postgres import PostgresDatabase, to_pyformat
from pipeline.store.postgres_migrations import POSTGRES_MIGRATIONS
from pipeline.store.records import AudienceRecord
from pipeline.store.sqlite import SqliteDatabase
from tests.helpers import FIRST_RUN, ledger_rows, publish

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _schema(database: SqliteDatabase | PostgresDatabase) -> dict[str, set[str]]:
    if database.dialect == "sqlite":
        tables = [
            name
            for (name,) in database.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        ]
        return {t: {row[1] for row in database.execute(f"PRAGMA table_info({t})")} for t in tables}
    schema: dict[str, set[str]] = {}
    for table, column in database.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name <> 'schema_version'"""
    ):
        schema.setdefault(table, set()).add(column)
    return schema


def test_both_backends_end_with_the_same_tables_and_columns(
    tmp_path: Path, fresh_postgres: str
) -> None:
    """A migration added to one backend and not the other fails here."""
    sqlite = SqliteDatabase.open(tmp_path / "ledger.db")
    postgres = PostgresDatabase.open(fresh_postgres)
    try:
        assert _schema(postgres) == _schema(sqlite)
        assert postgres.schema_version() == len(POSTGRES_MIGRATIONS)
    finally:
        sqlite.close()
        postgres.close()


def test_placeholders_are_rewritten_but_literals_are_left_alone() -> None:
    assert to_pyformat("SELECT ? WHERE a = '?' AND b LIKE '5%' AND c = ?") == (
        "SELECT %s WHERE a = '?' AND b LIKE '5%%' AND c = %s"
    )
    assert to_pyformat('SELECT "odd?name" FROM t WHERE x = ?') == (
        'SELECT "odd?name" FROM t WHERE x = %s'
    )


def test_literal_question_marks_and_percents_reach_postgresql_intact(fresh_postgres: str) -> None:
    with Ledger(PostgresDatabase.open(fresh_postgres)) as ledger:
        row = ledger._db.execute("SELECT '?', '100%', ?", ("x",)).fetchone()
    assert tuple(row) == ("?", "100%", "x")


def _record(recipients: list[tuple[str, str, str]]) -> PublishRecord:
    return PublishRecord(
        articles=(),
        withdrawn=(),
        digest_subject="Digest",
        web_html="<p>web</p>",
        audiences=(AudienceRecord("all", "Digest", "nonce", "<p>x</p>", "x"),),
        recipients=iter(recipients),
        new_count=0,
    )


@pytest.fixture
def ledger(tmp_path: Path, ledger_backend: str) -> Ledger:
    """An empty ledger on each backend (a project of defaults in ``tmp_path``)."""
    (tmp_path / "pipeline.toml").write_text("", encoding="utf-8")
    return open_ledger(load_settings(tmp_path))


def test_one_row_per_address_whatever_its_case(ledger: Ledger) -> None:
    """SQLite's NOCASE column; on PostgreSQL a unique index on lower(email)."""
    with ledger:
        digest = ledger.record_publish(
            _record([("all", "Ann@Example.org", "Ann"), ("all", "ann@example.org", "Ann")]), NOW
        )
        assert digest is not None
        assert ledger.delivery_counts(digest).pending == 1


def test_an_address_suppressed_in_another_case_cancels_its_queued_message(
    ledger: Ledger,
) -> None:
    """The outbox keeps the address as written; the suppression compares lower-cased."""
    with ledger:
        digest = ledger.record_publish(
            _record([("all", "Bob@Example.org", "Bob"), ("all", "cy@example.org", "Cy")]), NOW
        )
        ledger.suppress("BOB@example.ORG", "bounced: 550", NOW)
        counts = ledger.delivery_counts(digest)
        assert (counts.failed, counts.pending) == (1, 1)
        rows = ledger.claim("host:1:a", NOW, NOW + timedelta(minutes=2), 10)
        assert [r.email for r in rows] == ["cy@example.org"]


def test_recording_a_send_says_whether_the_next_row_is_still_the_drains(
    ledger: Ledger,
) -> None:
    """``mark_sent(then_check=...)`` answers what ``still_claimed`` would, in the commit."""
    with ledger:
        ledger.record_publish(
            _record([("all", f"r{i}@example.net", "R") for i in range(6)]), FIRST_RUN
        )
        first, second, third, fourth = ledger.claim("h:1:x", NOW, NOW + timedelta(minutes=5), 4)
        (elsewhere, _) = ledger.claim("h:2:y", NOW, NOW + timedelta(minutes=5), 2)
        ours = "h:1:x"
        assert ledger.mark_sent(first.id, "<1@x>", "250 ok", NOW, then_check=(second.id, ours))
        ledger.suppress(third.email, "bounced: 550", NOW)  # cancels its queued row
        for wait in (True, False):
            answer = ledger.mark_sent(
                second.id, "<2@x>", "250 ok", NOW, wait=wait, then_check=(third.id, ours)
            )
            assert answer is False  # written, and the next row is no longer ours to send
        assert (
            ledger.mark_sent(second.id, "<2@x>", "250 ok", NOW, then_check=(elsewhere.id, ours))
            is False
        )  # another drain's row
        assert ledger.mark_sent(second.id, "<2@x>", "250 ok", NOW) is True
        # The sent row erased meanwhile (a subscriber forgotten): the next row is looked up
        # on its own.
        assert (
            ledger.mark_sent(fourth.id + 100, "<9@x>", "250 ok", NOW, then_check=(fourth.id, ours))
            is True
        )
        assert ledger.delivery_counts().sent == 2
        assert ledger.still_claimed(fourth.id, ours)


def test_the_hourly_cap_history_is_the_newest_sends_however_many_there_were(
    ledger: Ledger,
) -> None:
    """A drain seeds its per-hour cap with past sends: only the newest ``limit`` of the
    past hour, oldest first, so the history a drain holds is bounded by the cap."""
    with ledger:
        ledger.record_publish(
            _record([("all", f"r{i}@example.net", "R") for i in range(30)]), FIRST_RUN
        )
        rows = ledger.claim("h:1:x", NOW, NOW + timedelta(minutes=5), 30)
        for minute, row in enumerate(rows):  # one send a minute, the first 29 minutes ago
            ledger.mark_sent(
                row.id, f"<{row.id}@x>", "250 ok", NOW + timedelta(minutes=minute - 29)
            )
        since = NOW - timedelta(minutes=20)
        newest = ledger.sent_since(since, 5)
        assert newest == [NOW - timedelta(minutes=m) for m in (4, 3, 2, 1, 0)]
        assert len(ledger.sent_since(since, 1000)) == 21  # 20 minutes ago up to now


def test_concurrent_claimers_never_get_the_same_row(ledger: Ledger, tmp_path: Path) -> None:
    """Four connections claiming at once (SKIP LOCKED on PostgreSQL, the write lock on
    SQLite) share 200 rows without overlap."""
    with ledger:
        ledger.record_publish(
            _record([("all", f"r{i}@example.net", "R") for i in range(200)]), FIRST_RUN
        )
    settings = load_settings(tmp_path)
    claimed: list[list[int]] = []

    def claimer(name: str) -> None:
        with open_ledger(settings) as own:
            mine: list[int] = []
            while rows := own.claim(name, NOW, NOW + timedelta(minutes=5), 7):
                mine += [r.id for r in rows]
            claimed.append(mine)

    threads = [threading.Thread(target=claimer, args=(f"h:{i}:x",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [row for mine in claimed for row in mine]
    assert len(every) == len(set(every)) == 200


def test_two_workers_migrating_a_fresh_database_at_once_both_succeed(fresh_postgres: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            PostgresDatabase.open(fresh_postgres).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = PostgresDatabase.open(fresh_postgres)
    assert database.schema_version() == len(POSTGRES_MIGRATIONS)
    database.close()


def test_a_read_only_postgresql_ledger_refuses_writes(fresh_postgres: str) -> None:
    database = open_database(fresh_postgres, read_only=True)
    try:
        assert database.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            database.execute("DELETE FROM outbox")
    finally:
        database.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://pipeline@127.0.0.1:{closed}/x", "Connection refused"),
        ("postgresql://no_such_role@{server}/postgres", 'role "no_such_role" does not exist'),
        (
            "postgresql://pipeline:s3cret@{server}/no_such_db",
            'database "no_such_db" does not exist',
        ),
    ],
    ids=["unreachable", "login-refused", "no-database"],
)
def test_a_database_that_cannot_be_opened_is_one_line_naming_it(
    project: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    from urllib.parse import urlsplit

    from tests.conftest import free_port

    server = urlsplit(postgres_url).netloc.rpartition("@")[2]
    url = url.format(closed=free_port(), server=server)
    monkeypatch.setenv("PIPELINE_DATABASE_URL", url)
    with pytest.raises(LedgerError) as caught:
        open_ledger(load_settings(project))
    assert expected in str(caught.value) and "s3cret" not in str(caught.value)
    result = CliRunner().invoke(cli, ["--root", str(project), "status"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot open the ledger database postgresql://" in result.output
    assert expected in result.output and "s3cret" not in result.output


def test_a_ledger_url_of_another_kind_is_a_config_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_DATABASE_URL", "mysql://u:pw@db/x")
    with pytest.raises(ConfigError, match=r"ledger URL 'mysql://u:\*\*\*@db/x' is not valid"):
        open_ledger(load_settings(project))
    (project / "pipeline.toml").write_text('[ledger]\nurl = "redis://x"\n', encoding="utf-8")
    monkeypatch.delenv("PIPELINE_DATABASE_URL")
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1 and "ledger URL 'redis://x' is not valid" in result.output


def test_a_password_in_the_files_ledger_url_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pipeline.toml is committed; the password belongs in PIPELINE_DATABASE_URL or PGPASSWORD.
    monkeypatch.delenv("PIPELINE_DATABASE_URL", raising=False)
    (project / "pipeline.toml").write_text(
        '[ledger]\nurl = "postgresql://pipeline:hunter2@db.example.org/news"\n', encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert "[ledger] url: keep the password out of the file" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_ledger_copy_moves_everything_to_postgresql_and_back(
    project: Path, fresh_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_delivery import add_readers

    add_readers(project, 25)
    publish(project)  # feeds, site, subscribers, a digest delivered into the Maildir
    source = table_counts(open_database(load_settings(project).ledger_location()))
    runner = CliRunner()
    root = ["--root", str(project)]

    result = runner.invoke(cli, [*root, "ledger", "copy", "--to", fresh_postgres])
    assert result.exit_code == 0, result.output
    assert "every table's count matches" in result.output
    monkeypatch.setenv("PIPELINE_DATABASE_URL", fresh_postgres)
    assert table_counts(open_database(fresh_postgres)) == source
    assert sum(source.values()) > 60 and source["outbox"] == 25 + 5

    # The copy is a working ledger: status reads it; a new digest continues the numbering.
    status = runner.invoke(cli, [*root, "status", "--json"])
    assert status.exit_code == 0, status.output
    (digest_id,) = ledger_rows(project, "SELECT max(id) FROM digests")[0]
    with open_ledger(load_settings(project)) as ledger:
        again = ledger.record_publish(_record([("all", "new@example.org", "N")]), NOW)
    assert again == digest_id + 1

    # A non-empty target is refused, then replaced on request; and the way back.
    refused = runner.invoke(cli, [*root, "ledger", "copy", "--to", fresh_postgres])
    assert refused.exit_code == 2 and "names the ledger being copied" in refused.output
    assert "run the copy with PIPELINE_DATABASE_URL unset" in " ".join(refused.output.split())
    back = project / "back.db"
    result = runner.invoke(cli, [*root, "ledger", "copy", "--to", f"sqlite:///{back}"])
    assert result.exit_code == 0, result.output
    assert table_counts(SqliteDatabase.open(back))["outbox"] == source["outbox"] + 1
    monkeypatch.delenv("PIPELINE_DATABASE_URL")
    refused = runner.invoke(cli, [*root, "ledger", "copy", "--to", fresh_postgres])
    assert refused.exit_code == 1 and "the target ledger is not empty" in refused.output
    replaced = runner.invoke(cli, [*root, "ledger", "copy", "--to", fresh_postgres, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert table_counts(open_database(fresh_postgres)) == source


def test_a_file_that_is_not_sqlite_is_one_line_not_a_traceback(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default ledger damaged, or PIPELINE_DATABASE_URL naming some other file.
    monkeypatch.delenv("PIPELINE_DATABASE_URL", raising=False)
    ledger = project / "state" / "pipeline.db"
    ledger.parent.mkdir(exist_ok=True)
    ledger.write_text("not a ledger\n", encoding="utf-8")
    for command in ("status", "publish"):
        result = CliRunner().invoke(cli, ["--root", str(project), command])
        assert result.exit_code == 1, result.output
        assert f"cannot open the ledger database {ledger}: file is not a database" in (
            result.output
        )
        assert "Traceback" not in result.output


def test_a_sqlite_target_that_cannot_be_made_is_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_DATABASE_URL", raising=False)
    blocker = project / "a-file"
    blocker.write_text("", encoding="utf-8")
    target = blocker / "pipeline.db"  # its folder would have to be inside a file
    result = CliRunner().invoke(
        cli, ["--root", str(project), "ledger", "copy", "--to", f"sqlite://{target}"]
    )
    assert result.exit_code == 1, result.output
    assert "cannot open the ledger database" in result.output
    assert f"{blocker}: File exists" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


def test_ledger_copy_onto_the_same_sqlite_file_spelled_another_way_is_refused(
    project: Path,
) -> None:
    publish(project)
    ledger_file = project / "state" / "pipeline.db"
    before = table_counts(SqliteDatabase.open(ledger_file))
    (project / "alias.db").symlink_to(ledger_file)
    for spelling in (
        f"sqlite:///{project / 'alias.db'}",  # a symlink
        f"sqlite:///{project / 'state' / '..' / 'state' / 'pipeline.db'}",  # another path
        "sqlite:alias.db",  # relative to the project
    ):
        refused = CliRunner().invoke(
            cli, ["--root", str(project), "ledger", "copy", "--to", spelling]
        )
        assert refused.exit_code == 2, (spelling, refused.output)
        assert f"names the ledger being copied ({ledger_file})" in refused.output
    assert table_counts(SqliteDatabase.open(ledger_file)) == before


def test_ledger_copy_to_a_file_that_is_no_database_names_to(project: Path) -> None:
    publish(project)
    refused = CliRunner().invoke(
        cli, ["--root", str(project), "ledger", "copy", "--to", "sqlite:pipeline.toml"]
    )
    assert refused.exit_code == 1, refused.output
    line = " ".join(refused.output.split())
    assert f"cannot open the ledger database {project / 'pipeline.toml'}" in line
    assert "`ledger copy --to`" in line and "Traceback" not in line


def test_ledger_copy_onto_the_same_postgresql_database_spelled_another_way_is_refused(
    project: Path, fresh_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import urlsplit

    monkeypatch.setenv("PIPELINE_DATABASE_URL", fresh_postgres)
    publish(project)
    before = table_counts(open_database(fresh_postgres))
    parts = urlsplit(fresh_postgres)
    other_host = "localhost" if parts.hostname == "127.0.0.1" else "127.0.0.1"
    for spelling in (
        fresh_postgres.replace(f"@{parts.hostname}", f"@{other_host}", 1),
        fresh_postgres + ("&" if parts.query else "?") + "application_name=copy",
    ):
        refused = CliRunner().invoke(
            cli, ["--root", str(project), "ledger", "copy", "--to", spelling]
        )
        assert refused.exit_code == 2, (spelling, refused.output)
        assert "names the ledger being copied" in refused.output
    assert table_counts(open_database(fresh_postgres)) == before
