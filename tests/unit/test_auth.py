"""API keys (app.web.auth): the key file's rules, finding a key by its secret, and what a key may do."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.models import MAX_ID
from app.web import auth
from app.web.auth import KeyFileError, Keyring, decide, digest, find, keyring, parse_keys, presented_secret

SECRET = "s3cret-of-the-ledger-service"
OTHER = "another-secret"


def entry(**fields: Any) -> Dict[str, Any]:
    return {"id": "ledger", "sha256": digest(SECRET), "scopes": ["operations:write"], **fields}


def file_of(*entries: Any) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def ring_of(*entries: Any) -> Keyring:
    return keyring(parse_keys(file_of(*entries)), None)


def test_a_key_file_reads_into_keys_with_their_scopes_and_ranges() -> None:
    keys = parse_keys(
        file_of(
            entry(scopes=["operations:write", "accounts:read"], users=[[1000, 1999], [5000, 5000]]),
            {"id": "ops", "sha256": digest(OTHER).upper(), "scopes": ["operator", "metrics:read"]},
        )
    )
    assert [key.id for key in keys] == ["ledger", "ops"]
    assert keys[0].scopes == {"operations:write", "accounts:read"}
    assert keys[0].users == ((1000, 1999), (5000, 5000))
    assert keys[1].users is None  # every user
    assert keys[1].sha256 == digest(OTHER)  # hex digits in either case, kept in lower case
    assert parse_keys(file_of()) == ()
    assert keys[0].to_json() == {
        "id": "ledger",
        "sha256": digest(SECRET),
        "scopes": ["accounts:read", "operations:write"],
        "users": [[1000, 1999], [5000, 5000]],
    }


@pytest.mark.parametrize(
    "text, says",
    [
        (b"not json", "not valid JSON"),
        (b"\xff", "not UTF-8"),
        (b'{"keys": [], "extra": 1}', 'one field, "keys"'),
        (b"[]", 'one field, "keys"'),
        (b'{"keys": {}}', '"keys" must be a list'),
        (b'{"keys": [], "keys": []}', '"keys" must be a list'),  # a repeated field is no value
        (file_of(1), "keys[0] must be an object"),
        (file_of(entry(user=[[1, 2]])), 'unknown field "user"'),  # a misspelt users must not mean every user
        (file_of(entry(id="")), "keys[0].id must be"),
        (file_of(entry(id="a b")), "keys[0].id must be"),
        (file_of(entry(id=7)), "keys[0].id must be"),
        (file_of(entry(sha256="abc")), "key 'ledger': sha256 must be 64 hex digits"),
        (file_of(entry(scopes=[])), "scopes must be a non-empty list"),
        (file_of(entry(scopes="operator")), "scopes must be a non-empty list"),
        (file_of(entry(scopes=["admin"])), 'unknown scope "admin"'),
        (file_of(entry(users={})), "users must be a list"),
        (file_of(entry(users=[5])), "users has 5, not a [first, last] pair"),
        (file_of(entry(users=[[1, 2, 3]])), "not a [first, last] pair"),
        (file_of(entry(users=[[0, 5]])), "not a [first, last] pair"),
        (file_of(entry(users=[[1, MAX_ID + 1]])), "not a [first, last] pair"),
        (file_of(entry(users=[[True, 5]])), "not a [first, last] pair"),
        (file_of(entry(users=[[1.0, 5]])), "not a [first, last] pair"),
        (file_of(entry(users=[["1", 5]])), "not a [first, last] pair"),
        (file_of(entry(users=[[9, 5]])), "[9, 5], whose first is above its last"),
        (file_of(entry(), entry(sha256=digest(OTHER))), "key id 'ledger' is given more than once"),
        (file_of(entry(), entry(id="copy")), "keys 'ledger' and 'copy' have the same secret"),
    ],
)
def test_a_key_file_that_breaks_a_rule_is_refused_naming_the_problem(text: bytes, says: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        parse_keys(text)
    assert says in str(refused.value)


def test_a_secret_pasted_where_its_digest_belongs_is_never_repeated_in_the_error() -> None:
    with pytest.raises(KeyFileError) as refused:
        parse_keys(file_of(entry(sha256=SECRET)))
    assert SECRET not in str(refused.value)


def test_the_token_is_a_key_with_every_scope_for_every_user() -> None:
    assert keyring(None, None) == auth.OPEN
    ring = keyring(None, "tok")
    (key,) = ring.keys
    assert ring.enforced and key.id == "UBS_API_TOKEN" and key.scopes == set(auth.SCOPES) and key.users is None
    assert find(ring, "tok") == key
    both = keyring(parse_keys(file_of(entry())), "tok")
    assert [key.id for key in both.keys] == ["ledger", "UBS_API_TOKEN"]
    with pytest.raises(KeyFileError, match="the same secret"):
        keyring(parse_keys(file_of(entry())), SECRET)


def test_a_file_with_no_keys_refuses_everything() -> None:
    ring = keyring((), None)
    assert ring.enforced and decide(ring, find(ring, SECRET), ()).status == 401


@pytest.mark.parametrize(
    "header, secret",
    [
        (f"Bearer {SECRET}", SECRET),
        (f"bearer {SECRET}", SECRET),
        (f"  BEARER   {SECRET} ", SECRET),
        (f"Basic {SECRET}", None),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Bearer {SECRET} extra", None),
        (SECRET, None),
        ("", None),
        (None, None),
    ],
)
def test_the_secret_is_read_from_a_bearer_header_only(header: Optional[str], secret: Optional[str]) -> None:
    assert presented_secret(header) == secret


def test_a_key_is_found_by_its_secret_alone() -> None:
    ring = ring_of(entry(), {"id": "ops", "sha256": digest(OTHER), "scopes": ["operator"]})
    found = find(ring, SECRET)
    assert found is not None and found.id == "ledger"
    assert getattr(find(ring, OTHER), "id", None) == "ops"
    assert find(ring, digest(SECRET)) is None  # the digest is no secret
    assert find(ring, SECRET + "x") is None
    assert find(ring, None) is None
    assert find(ring, "\udcff") is None  # undecodable header bytes compare unequal, never raise


def test_decisions_name_the_missing_scope_or_the_user_out_of_range() -> None:
    ring = ring_of(entry(scopes=["operations:write", "accounts:read"], users=[[10, 19], [30, 30]]))
    key = find(ring, SECRET)
    assert decide(ring, key, ("operations:write",), [10, 19, 30]).allowed
    assert decide(ring, key, ("operator", "accounts:read"), [12]).allowed  # one of the scopes suffices
    assert decide(ring, key, ()).allowed  # any key
    refused = decide(ring, key, ("assets:write",))
    assert (refused.status, refused.scope, refused.user_id, refused.key_id) == (403, "assets:write", None, "ledger")
    assert refused.body() == {
        "error": "forbidden",
        "field": None,
        "message": "this key lacks the scope assets:write",
        "scope": "assets:write",
    }
    out = decide(ring, key, ("operations:write",), [10, 20, 31])
    assert (out.status, out.user_id, out.scope) == (403, 20, None)  # the first user it does not cover
    assert out.body()["user_id"] == 20 and out.body()["error"] == "forbidden"
    nobody = decide(ring, None, ("operations:write",), [10])
    assert (nobody.status, nobody.key_id, nobody.body()["error"]) == (401, None, "unauthorized")


def test_an_open_gateway_allows_everything_without_a_key() -> None:
    assert decide(auth.OPEN, None, ("operator",), [1]).allowed
    assert decide(auth.OPEN, None, ("operator",), [1]).key_id is None


scopes = st.sets(st.sampled_from(auth.SCOPES), min_size=1)
user_ids = st.integers(min_value=1, max_value=MAX_ID)
ranges = st.lists(st.tuples(user_ids, user_ids).map(lambda pair: (min(pair), max(pair))), max_size=4)


@given(granted=scopes, needed=st.lists(st.sampled_from(auth.SCOPES), max_size=3), users=st.lists(user_ids, max_size=4))
def test_a_key_is_allowed_exactly_what_its_scopes_and_ranges_cover(
    granted: set, needed: List[str], users: List[int]
) -> None:
    pairs = [[users[0], users[0]]] if users else []
    ring = ring_of(entry(scopes=sorted(granted), users=pairs))
    verdict = decide(ring, find(ring, SECRET), tuple(needed), users)
    has_scope = not needed or bool(granted.intersection(needed))
    covered = all(user == users[0] for user in users)
    assert verdict.allowed == (has_scope and covered)
    assert verdict.status == (200 if verdict.allowed else 403)
    assert SECRET not in json.dumps(verdict.body())


@given(pairs=ranges, user=user_ids)
def test_ranges_are_inclusive(pairs: List[Tuple[int, int]], user: int) -> None:
    (key,) = parse_keys(file_of(entry(users=[list(pair) for pair in pairs])))
    assert key.covers(user) == any(first <= user <= last for first, last in pairs)
    for first, last in pairs:
        assert key.covers(first) and key.covers(last)


@given(secret=st.text(min_size=1, max_size=80).filter(lambda text: not any(c.isspace() for c in text)))
def test_any_secret_finds_its_own_key_and_no_other(secret: str) -> None:
    other = {"id": "other", "sha256": digest(secret + "!"), "scopes": ["operator"]}
    ring = ring_of(entry(sha256=digest(secret)), other)
    found = find(ring, presented_secret(f"Bearer {secret}"))
    assert found is not None and found.id == "ledger"


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.9.9.9", "::1", "localhost"])
def test_a_loopback_gateway_without_keys_runs_open(bind: str) -> None:
    seen = auth.exposure(bind, keys_configured=False, insecure=False, behind_proxy=False, tls=False)
    assert (seen.open, seen.insecure, seen.plain_http, seen.refusal) == (True, False, False, None)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "10.1.2.3", "ledger-1.internal", ""])
def test_a_gateway_facing_the_network_needs_keys_or_insecure(bind: str) -> None:
    refused = auth.exposure(bind, keys_configured=False, insecure=False, behind_proxy=True, tls=False)
    assert refused.refusal is not None and f"binds {bind}," in refused.refusal
    assert "UBS_API_KEYS_FILE" in refused.refusal and "UBS_INSECURE=1" in refused.refusal
    insecure = auth.exposure(bind, keys_configured=False, insecure=True, behind_proxy=True, tls=False)
    assert (insecure.refusal, insecure.insecure, insecure.open) == (None, True, True)
    keyed = auth.exposure(bind, keys_configured=True, insecure=False, behind_proxy=False, tls=False)
    assert (keyed.refusal, keyed.open, keyed.insecure, keyed.plain_http) == (None, False, False, True)
    assert not auth.exposure(bind, keys_configured=True, insecure=False, behind_proxy=True, tls=False).plain_http
    served = auth.exposure(bind, keys_configured=True, insecure=False, behind_proxy=False, tls=True)
    assert (served.refusal, served.plain_http) == (None, False)  # it serves HTTPS itself
    # TLS hides the traffic, not the gateway: without keys it still needs UBS_INSECURE=1 to start.
    assert auth.exposure(bind, keys_configured=False, insecure=False, behind_proxy=False, tls=True).refusal
