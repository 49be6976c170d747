"""Every problem `check` (and `publish`) reports about an article names its file and line:
the front-matter line of the field involved; for a minted id, of `published`, the field it
is made from."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import publish, refusals, where, write

FRONT = "title: {title}\nsummary: A summary.\npublished: 2026-11-10\n{extra}topics: [scleroderma]"


def test_two_articles_with_the_same_id_are_named_to_the_line(project: Path) -> None:
    for slug in ("first-copy", "second-copy"):
        write(project, slug, FRONT.format(title=slug, extra="id: urn:uuid:same\n"))
    checked, refused = refusals(project)
    assert ("articles/second-copy.md", 5, "id") in where(checked)
    assert where(checked) == where(refused)
    assert all(p.line is not None for p in checked)


def test_an_id_that_belongs_to_a_published_article_is_named_to_the_line(project: Path) -> None:
    write(project, "original", FRONT.format(title="Original", extra="id: urn:uuid:taken\n"))
    publish(project, send_email=False)
    write(project, "usurper", FRONT.format(title="Usurper", extra="\nid: urn:uuid:taken\n"))
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [("articles/usurper.md", 6, "id")]


def test_a_minted_id_collision_points_at_the_published_line(project: Path) -> None:
    write(project, "keeper", FRONT.format(title="Keeper", extra=""))
    publish(project, send_email=False)
    minted = "tag:localhost,2026-11-10:articles/keeper"
    # Another article claims the keeper's minted id explicitly, and the keeper goes.
    (project / "articles" / "keeper.md").unlink()
    write(project, "claimer", FRONT.format(title="Claimer", extra=f"id: {minted}\n"))
    write(project, "keeper", FRONT.format(title="Keeper", extra=""))
    checked, refused = refusals(project)
    assert where(checked) == where(refused)
    assert all(p.line is not None for p in checked), checked
