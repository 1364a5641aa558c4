"""The webhook signature: what receivers rely on to trust a delivery and refuse a replay."""

from __future__ import annotations

from taskbroker.webhook_signature import sign, verify

SECRET = b"a-shared-secret"
BODY = b'{"id": "x", "state": "complete"}'


def test_a_signature_verifies_with_the_same_secret_and_body() -> None:
    assert verify(SECRET, sign(SECRET, BODY), BODY)


def test_a_changed_body_or_another_secret_fails() -> None:
    header = sign(SECRET, BODY)

    assert not verify(SECRET, header, BODY + b" ")
    assert not verify(b"another", header, BODY)


def test_an_old_signature_is_refused_as_a_replay() -> None:
    header = sign(SECRET, BODY, timestamp=1_000_000)

    assert not verify(SECRET, header, BODY, now=1_000_000 + 301)
    assert verify(SECRET, header, BODY, now=1_000_000 + 299)


def test_a_tampered_timestamp_fails() -> None:
    header = sign(SECRET, BODY, timestamp=1_000_000)
    tampered = header.replace("t=1000000", "t=1000001")

    assert not verify(SECRET, tampered, BODY, now=1_000_000)


def test_malformed_headers_fail_without_raising() -> None:
    for header in ("", "garbage", "t=abc,v1=00", "v1=00", "t=1"):
        assert not verify(SECRET, header, BODY, now=1)
