"""Versioned schema migrations, applied in order when a ledger is opened.

Each entry is one migration: a script of ``;``-separated statements applied in one
transaction. Entries are only ever appended; an applied migration is never edited, since
existing ledgers have run it. The SQLite file records how many it has run in its
``user_version``.
"""

from __future__ import annotations

from pipeline.store.inbound import INBOUND_MIGRATION

__all__ = ["SQLITE_MIGRATIONS"]

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE articles (
        slug          TEXT PRIMARY KEY,
        entry_id      TEXT NOT NULL UNIQUE,
        content_hash  TEXT NOT NULL,
        published     TEXT NOT NULL,
        updated       TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('live', 'withdrawn')),
        first_seen    TEXT NOT NULL,
        changed_at    TEXT NOT NULL
    );
    CREATE TABLE runs (
        id           INTEGER PRIMARY KEY,
        finished_at  TEXT NOT NULL,
        new          INTEGER NOT NULL,
        updated      INTEGER NOT NULL,
        withdrawn    INTEGER NOT NULL,
        digest_id    INTEGER
    );
    CREATE TABLE digests (
        id          INTEGER PRIMARY KEY,
        created_at  TEXT NOT NULL,
        subject     TEXT NOT NULL,
        web_html    TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE digest_audiences (
        digest_id     INTEGER NOT NULL REFERENCES digests(id),
        audience_key  TEXT NOT NULL,
        subject       TEXT NOT NULL,
        slot_nonce    TEXT NOT NULL,
        html          TEXT NOT NULL,
        text          TEXT NOT NULL,
        PRIMARY KEY (digest_id, audience_key)
    );
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY,
        digest_id        INTEGER NOT NULL REFERENCES digests(id),
        audience_key     TEXT NOT NULL,
        email            TEXT NOT NULL COLLATE NOCASE,
        name             TEXT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sent', 'deferred', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT,
        last_reply       TEXT,
        message_id       TEXT,
        lease_owner      TEXT,
        lease_until      TEXT,
        created_at       TEXT NOT NULL,
        sent_at          TEXT,
        UNIQUE (digest_id, email)
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
    CREATE TABLE suppressions (
        email       TEXT PRIMARY KEY COLLATE NOCASE,
        reason      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    """,
    # 2: subscribers move into the ledger; suppressions become their status (bounced)
    """
    CREATE TABLE subscribers (
        id            INTEGER PRIMARY KEY,
        email_key     TEXT NOT NULL UNIQUE,
        email         TEXT NOT NULL,
        name          TEXT NOT NULL DEFAULT '',
        topics        TEXT NOT NULL DEFAULT '',
        status        TEXT NOT NULL
                      CHECK (status IN ('pending', 'active', 'unsubscribed', 'bounced')),
        source        TEXT NOT NULL,
        ref           TEXT UNIQUE,
        reason        TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        confirmed_at  TEXT
    );
    CREATE INDEX subscribers_by_status ON subscribers (status);
    CREATE TABLE signups (
        id            TEXT PRIMARY KEY,
        email_key     TEXT NOT NULL,
        email         TEXT NOT NULL,
        name          TEXT NOT NULL,
        topics        TEXT NOT NULL,
        requested_at  TEXT NOT NULL,
        confirmed_at  TEXT
    );
    CREATE INDEX signups_by_address ON signups (email_key, requested_at);
    CREATE TABLE ledger_meta (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    INSERT INTO subscribers (email_key, email, status, source, reason, created_at, updated_at)
        SELECT lower(email), email, 'bounced', 'suppression', reason, created_at, created_at
        FROM suppressions;
    DROP TABLE suppressions
    """,
    # 3: caches that let a publish skip unchanged work (feeds and site)
    """
    CREATE TABLE article_cache (
        slug         TEXT PRIMARY KEY,
        source_hash  TEXT NOT NULL,
        article      TEXT NOT NULL,
        html         TEXT NOT NULL
    );
    CREATE TABLE site_outputs (
        path       TEXT PRIMARY KEY,
        input_key  TEXT NOT NULL,
        size       INTEGER NOT NULL,
        mtime_ns   INTEGER NOT NULL
    );
    """,
    # 4: claim-before-send finds due rows in id order. One index on the outbox only: each
    # message's commit rewrites every index its row is in, and that is the cost per send.
    """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_by_status ON outbox (status, id);
    """,
    # 5: the article cache remembers each file's size, times and inode, to skip reading it,
    # and keeps the Markdown body out of the JSON (decoding it was most of a no-op publish)
    """
    ALTER TABLE article_cache ADD COLUMN file_stat TEXT NOT NULL DEFAULT '';
    ALTER TABLE article_cache ADD COLUMN markdown TEXT NOT NULL DEFAULT ''
    """,
    # 6: transactional email (sign-up confirmations) goes through the same outbox as the
    # digests, as rows of a reserved digest 0 whose prepared message is kept beside them; and
    # erased (forgotten) addresses stay suppressed as keyed hashes, never as addresses.
    # (PostgreSQL: BYTEA for the BLOB.)
    """
    INSERT INTO digests (id, created_at, subject, web_html)
        VALUES (0, '1970-01-01T00:00:00+00:00', 'transactional email', '')
        ON CONFLICT (id) DO NOTHING;
    CREATE TABLE outbox_messages (
        outbox_id   INTEGER PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,
        sender      TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        data        BLOB NOT NULL
    );
    CREATE TABLE erased_addresses (
        address_hash     TEXT PRIMARY KEY,
        key_fingerprint  TEXT NOT NULL,
        created_at       TEXT NOT NULL
    )
    """,
    # 7: bounce events and scores; each outbox row keeps the cause of its last refusal
    """
    CREATE TABLE bounce_events (
        id          INTEGER PRIMARY KEY,
        email_key   TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('hard', 'soft')),
        cause       TEXT NOT NULL,
        reply       TEXT NOT NULL,
        digest_id   INTEGER,
        source      TEXT NOT NULL,
        points      REAL NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX bounce_events_by_address ON bounce_events (email_key, created_at);
    CREATE TABLE bounce_scores (
        email_key       TEXT PRIMARY KEY,
        score           REAL NOT NULL,
        day             TEXT NOT NULL,
        day_points      REAL NOT NULL,
        last_bounce_at  TEXT NOT NULL,
        reason          TEXT NOT NULL
    );
    ALTER TABLE outbox ADD COLUMN cause TEXT
    """,
    # 8: mail that came back and webhook events already handled (store/inbound.py)
    INBOUND_MIGRATION,
    # 9: feeds that tell the truth over time: ids of replaced rows are never minted again;
    # each feed's date never goes back; WebSub pings still owed to the hub
    """
    CREATE TABLE retired_ids (
        entry_id    TEXT PRIMARY KEY,
        slug        TEXT NOT NULL,
        retired_at  TEXT NOT NULL
    );
    CREATE TABLE feed_dates (
        scope       TEXT PRIMARY KEY,
        body_hash   TEXT NOT NULL,
        updated     TEXT NOT NULL,
        input_key   TEXT NOT NULL
    );
    CREATE TABLE websub_pending (
        topic_url   TEXT PRIMARY KEY,
        attempts    INTEGER NOT NULL,
        last_error  TEXT NOT NULL,
        since       TEXT NOT NULL
    );
    """,
    # 10: cadence. Each subscriber's frequency and the start of the window their next
    # periodic digest covers; an append-only log of article versions (each with the instant
    # it was published and what a digest shows of it); one row per periodic run, whose key
    # (frequency, period_end) makes recording a slot twice impossible. Articles already
    # published are logged with an empty card: they precede every window.
    """
    ALTER TABLE subscribers ADD COLUMN frequency TEXT NOT NULL DEFAULT 'immediately'
        CHECK (frequency IN ('immediately', 'daily', 'weekly', 'monthly'));
    ALTER TABLE subscribers ADD COLUMN digest_since TEXT;
    ALTER TABLE signups ADD COLUMN frequency TEXT NOT NULL DEFAULT 'immediately';
    ALTER TABLE digests ADD COLUMN frequency TEXT NOT NULL DEFAULT 'immediately';
    CREATE TABLE article_versions (
        id          INTEGER PRIMARY KEY,
        entry_id    TEXT NOT NULL,
        version_at  TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('published', 'quiet', 'withdrawn')),
        card        TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX article_versions_by_time ON article_versions (version_at);
    INSERT INTO article_versions (entry_id, version_at, kind)
        SELECT entry_id, changed_at,
               CASE status WHEN 'live' THEN 'published' ELSE 'withdrawn' END
        FROM articles;
    CREATE TABLE cadence_runs (
        frequency    TEXT NOT NULL,
        period_end   TEXT NOT NULL,
        recorded_at  TEXT NOT NULL,
        readers      INTEGER NOT NULL,
        PRIMARY KEY (frequency, period_end)
    )
    """,
    # 11: each audience's web edition ("view in browser"): the digest that audience got,
    # without any personal value or link
    """
    ALTER TABLE digest_audiences ADD COLUMN web_html TEXT NOT NULL DEFAULT ''
    """,
    # 12: a bounce is checked against the first message sent to its address. The index
    # leaves sent_at out: marking a message sent must not move an index entry.
    """
    CREATE INDEX outbox_by_address ON outbox (lower(email))
    """,
)
