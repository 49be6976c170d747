"""Delivery into Postfix's smtp-sink: the pipeline against a naive sender and smtp-source.

One digest of the sample project goes to N generated subscribers (100,000 at scale 1, and
a tenth of that to show memory stays flat); every sender talks to the same smtp-sink:

- the pipeline: ``deliver_outbox`` as ``pipeline publish`` runs it (claim-before-send
  outbox, persistent connections, one drain per core for large lists), in a fresh
  process whose peak RSS is measured (every process of it, sampled from /proc);
- the straightforward way: per subscriber, render the digest (Jinja2 and MJML), build an
  ``EmailMessage`` and send it over a new aiosmtplib connection; sampled, then
  extrapolated to N;
- Postfix's ``smtp-source`` (C, same number of sessions) sending as many messages of the
  same mean size just before each row, after a sync: the limit of the link on this machine
  at that moment, so each row has its own baseline.

``python -m bench delivery`` (``--scale 0.1`` for a quick look).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from bench.process_memory import MemoryPeaks, run_measured
from bench.table import Table

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONNECTIONS = 4
SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SENDER = "newsletter@example.org"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(
        [SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return sink
        time.sleep(0.05)
    sink.kill()
    raise RuntimeError(f"smtp-sink did not start on port {port}")


def make_project(
    root: Path, subscribers: int, *, dkim_key: bytes | None = None, ed25519: bool = False
) -> int:
    """The sample project with one recorded digest for ``subscribers`` generated addresses.

    ``dkim_key`` (PEM) turns DKIM signing on, the key in ``dkim.pem`` beside the settings;
    ``ed25519`` adds an Ed25519 co-signature (RFC 8463) with a fresh key.

    The outbox is written straight through ``Ledger.record_publish`` from a generator, so
    preparing a big list costs no memory either. Returns the digest id.
    """
    from pipeline import load_settings, open_ledger, plan_publish
    from pipeline.store import PublishRecord

    for name in ("articles", "templates", "subscribers"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pipeline.toml", root / "pipeline.toml")
    if dkim_key is not None:
        (root / "dkim.pem").write_bytes(dkim_key)
        with (root / "pipeline.toml").open("a", encoding="utf-8") as config:
            config.write('\n[dkim]\nselector = "bench"\nkey_file = "dkim.pem"\n')
            if ed25519:
                (root / "ed25519.pem").write_bytes(private_key_pem("ed25519"))
                config.write('ed25519_selector = "bench-ed"\ned25519_key_file = "ed25519.pem"\n')
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=NOW)
        assert plan.digest is not None
        keys = [a.audience.key for a in plan.digest.audiences]
        record = PublishRecord(
            articles=(),
            withdrawn=(),
            digest_subject=plan.digest.subject,
            web_html=plan.digest.web_html,
            audiences=tuple(a.record() for a in plan.digest.audiences),
            recipients=(
                (keys[i % len(keys)], f"reader{i:06d}@example.net", f"Reader {i}")
                for i in range(subscribers)
            ),
        )
        digest_id = ledger.record_publish(record, NOW)
    assert digest_id is not None
    return digest_id


def run_pipeline(
    root: Path, port: int, *, reuse_message: bool = False
) -> tuple[dict[str, float], float, MemoryPeaks]:
    """Deliver the outbox in a fresh process; (report, seconds, memory peaks)."""
    env = {**os.environ, "PIPELINE_SMTP_URL": f"smtp://127.0.0.1:{port}"}
    if reuse_message:
        env["BENCH_REUSE_MESSAGE"] = "1"
    env.setdefault("PIPELINE_SECRET_KEY", "bench-secret")
    out, seconds, peaks = run_measured(
        [sys.executable, "-m", "bench.bench_delivery", str(root)], cwd=REPO, env=env
    )
    return json.loads(out), seconds, peaks


def make_list_project(root: Path, subscribers: int) -> None:
    """The sample project with ``subscribers`` generated rows in ``subscribers/list.csv``."""
    for name in ("articles", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pipeline.toml", root / "pipeline.toml")
    (root / "subscribers").mkdir()
    choices = ("", "scleroderma", "multiple-sclerosis", "scleroderma;interstitial-lung-disease")
    with (root / "subscribers" / "list.csv").open("w", encoding="utf-8") as out:
        out.write("email,name,topics\n")
        for i in range(subscribers):
            out.write(f"reader{i:06d}@example.net,Reader {i},{choices[i % len(choices)]}\n")


def run_publish(root: Path, port: int) -> tuple[float, MemoryPeaks]:
    """``pipeline publish --yes`` end to end in a fresh process: (seconds, memory peaks)."""
    env = {
        **os.environ,
        "PIPELINE_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "PIPELINE_SECRET_KEY": "bench-secret",
    }
    _, seconds, peaks = run_measured(
        [sys.executable, "-m", "pipeline", "publish", "--yes"], cwd=root, env=env
    )
    return seconds, peaks


def private_key_pem(kind: str = "rsa") -> bytes:
    """A fresh private key (PEM, PKCS#8): RSA-2048 for ``[dkim]``, or ``"ed25519"``."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption
    from cryptography.hazmat.primitives.serialization import PrivateFormat as Format

    key = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    return key.private_bytes(Encoding.PEM, Format.PKCS8, NoEncryption())


def _child(root: Path) -> None:
    """The measured process: exactly what ``pipeline deliver`` does, minus the printing."""
    from pipeline import load_settings, open_ledger
    from pipeline.workers import deliver_outbox

    if os.environ.get("BENCH_REUSE_MESSAGE"):
        _reuse_first_message()
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        report = deliver_outbox(settings, ledger)
    print(json.dumps({**asdict(report), "rate": report.rate}))


def _reuse_first_message() -> None:
    """A fake factory, named as such: build one message per edition, then resend its bytes
    to each row of that edition.

    It takes message building out of the measurement, to show what the claiming, sending
    and recording machinery alone can do. One message per edition, not one in all, keeps
    the sizes those of the real rows (the editions differ by half; which edition a drain
    met first used to set the row's speed).
    """
    from dataclasses import replace

    from pipeline.messages import MessageFactory, OutgoingMessage
    from pipeline.store import OutboxRow

    build = MessageFactory.build
    built: dict[str, OutgoingMessage] = {}

    def reuse(self: MessageFactory, row: OutboxRow, **options: bool) -> OutgoingMessage:
        if row.audience_key not in built:
            built[row.audience_key] = build(self, row, **options)
        return replace(built[row.audience_key], recipient=row.email)

    MessageFactory.build = reuse  # type: ignore[method-assign]


def run_straightforward(root: Path, port: int, sample: int) -> tuple[float, int]:
    """Render, build and send ``sample`` messages the naive way; (messages/s, bytes each)."""
    import aiosmtplib

    from pipeline import load_settings, open_ledger, plan_publish
    from pipeline.digest import public_slot_values, render_audience
    from pipeline.digest_templates import template_environment
    from pipeline.disclaimer import load_disclaimer

    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=NOW)
    assert plan.digest is not None
    audience = plan.digest.audiences[0].audience
    disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
    env = template_environment(str(settings.paths.templates))

    async def send_all() -> int:
        size = 0
        for i in range(sample):
            compiled = render_audience(audience, settings, disclaimer, env, f"n{i}")
            values = {**public_slot_values(settings), "greeting": f"Hello Reader {i},"}
            message = EmailMessage()
            message["From"] = SENDER
            message["To"] = f"reader{i:06d}@example.net"
            message["Subject"] = compiled.subject
            message.set_content(compiled.text.fill(values, escape=False))
            message.add_alternative(compiled.html.fill(values, escape=True), subtype="html")
            size = len(message.as_bytes())
            await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)
        return size

    started = time.perf_counter()
    size = asyncio.run(send_all())
    return sample / (time.perf_counter() - started), size


def run_smtp_source(port: int, messages: int, size: int) -> float:
    """smtp-source sending ``messages`` of about ``size`` bytes; messages per second."""
    started = time.perf_counter()
    subprocess.run(
        [
            *(SOURCE, "-s", str(CONNECTIONS), "-d", "-m", str(messages), "-l", str(size)),
            *("-f", SENDER, "-t", "reader@example.net", f"127.0.0.1:{port}"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return messages / (time.perf_counter() - started)


def run(scale: float) -> Table:
    from pipeline.workers import PARALLEL_FROM

    full = max(1000, int(100_000 * scale))
    sizes = [full // 10, full]
    sample = max(50, int(500 * scale))
    table = Table(
        f"Delivery of one digest into smtp-sink ({CONNECTIONS} connections/sessions, "
        f"{os.cpu_count()} cores)",
        [
            "sender",
            "messages",
            "seconds",
            "messages/s",
            "smtp-source msg/s",
            "vs smtp-source",
            "CPU ms/message",
            "peak memory MB",
        ],
    )
    loads = [os.getloadavg()]
    port = _free_port()
    sink = _start_sink(port)
    results: list[tuple[str, int, float, MemoryPeaks, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            size = _message_size(Path(tmp), port)

            def baseline(count: int) -> float:
                # Each row gets its own smtp-source run just before it, on the same
                # footing: the previous row's files flushed to disk first, so neither
                # pays for the other's write-back, and drift over the run cancels out.
                os.sync()
                return run_smtp_source(port, count, size)

            def deliver(
                label: str,
                count: int,
                *,
                reuse: bool = False,
                key: bytes | None = None,
                ed25519: bool = False,
            ) -> None:
                root = Path(tmp) / f"site-{len(results)}"
                root.mkdir()
                make_project(root, count, dkim_key=key, ed25519=ed25519)
                source = baseline(count)
                report, seconds, peaks = run_pipeline(root, port, reuse_message=reuse)
                assert report["sent"] == count, report
                results.append((label, count, seconds, peaks, source))

            for count in sizes:
                deliver(f"pipeline (deliver_outbox), {count:,}", count)
            deliver(
                "pipeline, DKIM-signed (rsa-sha256 2048, relaxed)",
                full,
                key=private_key_pem(),
            )
            deliver(
                "pipeline, DKIM RSA + Ed25519 co-signature (RFC 8463)",
                full,
                key=private_key_pem(),
                ed25519=True,
            )
            deliver("pipeline, one message reused (fake factory)", full, reuse=True)
            for count in sizes:
                root = Path(tmp) / f"list-{count}"
                root.mkdir()
                make_list_project(root, count)
                source = baseline(count)
                seconds, peaks = run_publish(root, port)
                results.append(
                    (
                        f"whole `pipeline publish`, {count:,} in a list",
                        count,
                        seconds,
                        peaks,
                        source,
                    )
                )
            naive_source = baseline(full)
            naive_rate, _ = run_straightforward(Path(tmp) / "site-0", port, sample)
    finally:
        sink.kill()
        sink.wait()
    loads.append(os.getloadavg())

    for label, count, seconds, peaks, source in results:
        rate = count / seconds
        memory = f"{peaks.total_pss / 1024:.0f} ({peaks.per_process()})"
        cpu = f"{peaks.cpu_seconds * 1e3 / count:.2f}"
        table.add(label, count, seconds, rate, source, f"{rate / source:.2f}", cpu, memory)
    table.add(
        f"straightforward (sampled {sample}, extrapolated)",
        full,
        full / naive_rate,
        naive_rate,
        naive_source,
        f"{naive_rate / naive_source:.2f}",
        "",
        "",
    )
    table.notes += [
        f"Messages are about {size / 1024:.0f} KB (the mean over the sample digest's "
        "editions); before each row, Postfix's C client smtp-source sends the same count of "
        f"messages of that size over the same {CONNECTIONS} sessions with -d (one session "
        "for many messages), after a sync: each row's ratio is against its own baseline.",
        "Load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in loads[0])
        + "; at the end: "
        + ", ".join(f"{x:.2f}" for x in loads[1]),
        "Pipeline times are wall clock of a fresh process: start-up, claiming, building, "
        "sending and recording each row; the whole-publish rows also read the list, plan, "
        "merge the subscribers and record the outbox. Memory is sampled from /proc every "
        "50 ms: PSS summed over every process of the run (shared pages split between them), "
        "then each process's own peak RSS in brackets.",
        "CPU ms/message is user plus system time of every process of the run, divided by "
        "the messages: unlike the rates, it hardly moves when other work shares the machine.",
        "The fake-factory row builds one message per edition and resends its bytes to every "
        "row of that edition: it measures claiming, sending and recording alone, without "
        "message building.",
        "The straightforward row renders the digest (Jinja2 and MJML) and builds an "
        "EmailMessage per subscriber and sends each over a new connection: the way without "
        "this pipeline's shortcuts, timed on a sample and extrapolated.",
        "The DKIM row signs every message with a 2048-bit RSA key, relaxed/relaxed, over From, "
        "To, Subject, Date, Message-ID and both List-Unsubscribe headers among others.",
        "Targets, at the default scale: unsigned at least 0.5 of smtp-source (0.6 the goal), "
        "DKIM-signed at least 0.3; a whole publish under 100 MB, flat from 10,000 to 100,000. "
        f"Lists of {PARALLEL_FROM:,} or more are sent by one process per core, so a run "
        "with a smaller list (--scale below 0.5) shows one process beside several.",
        "The straightforward row has no CPU or memory figures: it is timed in this process.",
    ]
    return table


def _message_size(folder: Path, port: int) -> int:
    """The mean size of a digest as the pipeline sends it (for smtp-source's -l).

    Each audience (topic set) gets its own edition and the generated subscribers cycle
    through them, so the mean is over 60 rows: whole cycles for up to six audiences.
    """
    from pipeline import load_settings, open_ledger
    from pipeline.messages import MessageFactory

    root = folder / "size"
    root.mkdir()
    make_project(root, 60)
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        rows = ledger.claim("bench", NOW, NOW, 60)
        factory = MessageFactory(settings, "bench-secret", ledger.audience)
        return sum(len(factory.build(row).data) for row in rows) // len(rows)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
