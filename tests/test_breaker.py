"""The circuit breaker on its own: what counts as the same refusal, and when it trips."""

from __future__ import annotations

from pipeline.bounce_rules import Phase, Verdict, judge
from pipeline.breaker import SINGLE_DOMAIN_FACTOR, Breaker, signature


def refusal(address: str, template: str = "550 5.1.1 <{a}>: User unknown") -> tuple[str, Verdict]:
    code, _, text = template.format(a=address).partition(" ")
    return address, judge(int(code), text, Phase.RCPT)


def test_the_same_refusal_differs_only_in_addresses_and_identifiers() -> None:
    gmail = "550 5.1.1 <{a}> The email account does not exist. {a} 4fb4-{n}si.{n} - gsmtp"
    one = judge(550, gmail.format(a="ana@x.example", n=123)[4:], Phase.RCPT)
    two = judge(550, gmail.format(a="ben@y.example", n=98765)[4:], Phase.RCPT)
    assert signature(one) == signature(two)
    other = judge(550, "5.1.1 <ana@x.example>: Recipient address rejected", Phase.RCPT)
    assert signature(one) != signature(other)
    assert signature(judge(554, "5.7.1 denied", Phase.RCPT)) != signature(
        judge(550, "5.7.1 denied", Phase.RCPT)
    )


def test_it_trips_on_ten_recipients_in_three_domains_and_holds_their_outcomes() -> None:
    breaker: Breaker[int] = Breaker(recipients=10, domains=3)
    domains = ("a.example", "b.example", "c.example")
    for i in range(9):
        address, verdict = refusal(f"r{i}@{domains[i % 3]}")
        assert breaker.refused(address, verdict, i) == []
        assert breaker.tripped is None
    address, verdict = refusal("r9@a.example")
    breaker.refused(address, verdict, 9)
    assert breaker.tripped is not None and "10 different recipients" in breaker.tripped
    assert breaker.take_held() == list(range(10))


def test_one_domain_needs_five_times_as_many() -> None:
    breaker: Breaker[int] = Breaker(recipients=10, domains=3)
    for i in range(10 * SINGLE_DOMAIN_FACTOR - 1):
        breaker.refused(*refusal(f"r{i}@gmail.example"), i)
    assert breaker.tripped is None
    breaker.refused(*refusal("last@gmail.example"), 0)
    assert breaker.tripped is not None


def test_a_retry_of_the_same_recipient_does_not_count_twice() -> None:
    breaker: Breaker[int] = Breaker(recipients=3, domains=1)
    for _ in range(5):
        breaker.refused(*refusal("same@a.example"), 0)
    assert breaker.tripped is None


def test_a_delivery_or_another_refusal_ends_the_streak_and_hands_back_its_outcomes() -> None:
    breaker: Breaker[int] = Breaker(recipients=3, domains=2)
    breaker.refused(*refusal("a@a.example"), 1)
    breaker.refused(*refusal("b@b.example"), 2)
    assert breaker.held == 2
    assert breaker.release() == [1, 2]
    breaker.refused(*refusal("c@c.example"), 3)
    other = refusal("d@d.example", "452 4.2.2 <{a}> mailbox full")
    assert breaker.refused(*other, 4) == [3]
    breaker.refused(*refusal("e@e.example"), 5)
    assert breaker.tripped is None and breaker.held == 1
