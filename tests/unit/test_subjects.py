"""Subjects and KV keys built from arbitrary names stay valid and reversible."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from shared.util.subjects import api_subject, event_filter, event_subject, token, untoken

KV_KEY = re.compile(r"^[-/_=\.a-zA-Z0-9]+$")


@given(st.text(min_size=1))
def test_token_round_trips_and_is_one_valid_token(name: str) -> None:
    t = token(name)
    assert untoken(t) == name
    assert "." not in t and " " not in t and "*" not in t and ">" not in t
    assert KV_KEY.match(t)


def test_plain_names_are_kept() -> None:
    assert token("pool-1_a") == "pool-1_a"


def test_subject_shapes() -> None:
    assert api_subject("secret", "define") == "virtbus.v1.secret.define"
    assert api_subject("storage", "pool.define", "h1") == "virtbus.v1.storage.h1.pool.define"
    assert event_subject("secret", None, "secret", "u") == "virtbus.event.secret.cluster.secret.u"
    assert event_filter("storage", "h1") == "virtbus.event.storage.h1.*.>"
