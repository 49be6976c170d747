"""The one rule for names that must resolve (RFC 1034 3.1, RFC 1123 2.1), and its reasons."""

from __future__ import annotations

import random

import pytest

from pipeline.dns_names import MAX_LABEL, MAX_NAME, is_dns_name, why_not_dns_name

LONGEST = ".".join(["a" * MAX_LABEL] * 3 + ["b" * (MAX_NAME - 3 * (MAX_LABEL + 1))])


@pytest.mark.parametrize(
    "name", ["example.org", "s1", "2026", "xn--bcher-kva.example", "a-b.c-d", "a" * 63, LONGEST]
)
def test_names_that_can_resolve(name: str) -> None:
    assert len(LONGEST) == MAX_NAME
    assert is_dns_name(name) and why_not_dns_name(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "it is empty"),
        ("a" * 64, "a label of 64 characters, over 63"),
        (f"s1.{'b' * 64}.example", "a label of 64 characters, over 63"),
        (LONGEST + "b", "it is 254 characters, over 253"),
        ("example.org.", "an empty label"),
        ("a..b", "an empty label"),
        ("-news", "starts or ends with a hyphen"),
        ("news 2026", "'news 2026' has characters other than ASCII letters"),
        ("news_2026", "other than ASCII letters"),
        ("bücher.example", "other than ASCII letters"),
        ("news\n", "other than ASCII letters"),
    ],
)
def test_each_name_that_cannot_resolve_says_why(name: str, reason: str) -> None:
    why = why_not_dns_name(name)
    assert not is_dns_name(name)
    assert why is not None and reason in why


def test_the_reasons_agree_with_the_rule_on_random_names() -> None:
    """Every name the one expression refuses gets a specific reason, and no other name does."""
    rng = random.Random(6376)
    alphabet = "ab-._ \n" + "c" * 4
    for _ in range(20_000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.05:
            name = "a" * rng.randint(60, 66) + name
        why = why_not_dns_name(name)
        assert (why is None) == is_dns_name(name), name
        assert why != "it is not a DNS name", name
