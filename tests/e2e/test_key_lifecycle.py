"""Key lifecycle as a user of `spendgate up` meets it (issue 13.5): a trial key that expires
at its instant on every worker, rotation with a grace period for the old secret, metadata
edited over REST, and usage rolled up by a metadata tag from real SDK traffic."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest

from fakeupstream.server import MockUpstream
from tests.e2e.conftest import MINTED_SECRETS, Account, Running
from tests.e2e.test_caps_and_errors import MESSAGES, sdk
from tests.support import spendgate

BODY = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def statuses(gateway: Running, secret: str, count: int = 24) -> list[httpx.Response]:
    """`count` requests on fresh connections, spread over the workers."""

    def one(_: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"}
        return httpx.post(gateway.base + "/v1/chat/completions", json=BODY, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def codes(responses: list[httpx.Response]) -> set[int]:
    return {r.status_code for r in responses}


def master_call(account: Account, method: str, path: str, body: object = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {account.master_key}"}
    return httpx.request(method, account.gateway.base + path, headers=headers, json=body)


def test_an_expired_key_is_refused_at_its_instant_on_every_worker_before_the_provider(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    expires = now_ms() + 4_000
    expires += expires % 1000 == 0  # a fraction of a second, so the ISO form shows milliseconds
    key = account.mint("trial", max_spend_usd=1, expires_at=iso(expires))
    assert (key["expires_at"], key["expires_at_ms"], key["expired"]) == (iso(expires), expires, False)
    secret = str(key["secret"])
    assert codes(statuses(gateway, secret)) == {200}  # cached by both workers
    own = httpx.get(gateway.base + "/v1/key", headers={"Authorization": f"Bearer {secret}"}).json()["data"]
    assert own["expires_at"] == iso(expires) and own["expired"] is False
    assert now_ms() < expires, "warming the caches took longer than the key lived"

    time.sleep((expires - now_ms()) / 1000 + 0.005)
    seen = len(mock.requests)
    refused = statuses(gateway, secret)  # no propagation to wait for: the instant has passed
    assert codes(refused) == {401}
    assert {r.json()["error"]["message"] for r in refused} == {f"This API key expired at {iso(expires)}."}
    with sdk(gateway, secret) as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "expired at" in info.value.message
    with anthropic.Anthropic(base_url=gateway.base, api_key=secret, max_retries=0) as claude:
        with pytest.raises(anthropic.AuthenticationError) as refused_in_kind:
            claude.messages.create(
                model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
    assert "expired at" in refused_in_kind.value.message  # in Anthropic's error shape
    assert len(mock.requests) == seen  # nothing reached the provider

    shown = master_call(account, "GET", f"/v1/keys/{key['id']}").json()
    assert (shown["expires_at"], shown["expired"]) == (iso(expires), True)
    listed = master_call(account, "GET", "/v1/keys").json()["data"]
    assert [k["expired"] for k in listed if k["id"] == key["id"]] == [True]
    own = httpx.get(gateway.base + "/v1/key", headers={"Authorization": f"Bearer {secret}"})
    assert own.status_code == 200 and own.json()["data"]["expired"] is True  # it may still read itself

    extended = master_call(account, "PATCH", f"/v1/keys/{key['id']}", {"expires_at_ms": now_ms() + 60_000})
    assert extended.status_code == 200 and extended.json()["expired"] is False
    deadline = time.monotonic() + 2
    while codes(statuses(gateway, secret, 8)) != {200}:  # the change travels like any key change
        assert time.monotonic() < deadline, "an extended key stayed refused"
    cleared = master_call(account, "PATCH", f"/v1/keys/{key['id']}", {"expires_at": None}).json()
    assert (cleared["expires_at"], cleared["expires_at_ms"], cleared["expired"]) == (None, None, False)


def test_bad_expiries_are_400s_naming_the_field(account: Account) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at", "no UTC offset"),
        ({"expires_at": "next week"}, "expires_at", "not an ISO-8601"),
        ({"expires_at": 5}, "expires_at", "ISO-8601"),
        ({"expires_at_ms": "soon"}, "expires_at_ms", "epoch milliseconds"),
        (
            {"expires_at": iso(now_ms() + 60_000), "expires_at_ms": now_ms() + 60_000},
            "expires_at",
            "not both",
        ),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "expires_at: must be in the future"),
        ({"expires_at_ms": 1_000}, "expires_at_ms", "expires_at_ms: must be in the future"),
        ({"expires_at_ms": True}, "expires_at_ms", "epoch milliseconds"),
        ({"expires_at_ms": 2**62}, "expires_at_ms", "expires_at_ms: must be at most"),
    ]
    for fields, param, fragment in cases:
        response = master_call(account, "POST", "/v1/keys", {"name": "bad", **fields})
        assert response.status_code == 400, fields
        error = response.json()["error"]
        assert error["param"] == param and fragment in error["message"], error
    assert [k["name"] for k in master_call(account, "GET", "/v1/keys").json()["data"]] == ["master"]


def test_rotation_keeps_the_key_and_the_old_secret_works_through_its_grace(
    gateway: Running, account: Account
) -> None:
    key = account.mint("user_7", max_spend_usd=5, metadata={"user_id": "u7"})
    old = str(key["secret"])
    with sdk(gateway, old) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    spent = cast(int, account.events(str(key["id"]), 1)[0]["cost_micros"])
    assert codes(statuses(gateway, old, 8)) == {200}  # the old secret is cached by the workers

    rotated = master_call(account, "POST", f"/v1/keys/{key['id']}/rotate", {"grace_ms": 3_000})
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    new = str(body["secret"])
    MINTED_SECRETS.append(new)
    assert new != old and new.startswith("sg_live_")
    assert (body["id"], body["max_spend_micros"], body["metadata"]) == (
        key["id"],
        5_000_000,
        {"user_id": "u7"},
    )
    assert body["spent_micros"] >= spent and body["cap_period"] == key["cap_period"]
    grace_ends = cast(int, body["previous_secret_expires_ms"])
    assert grace_ends == body["rotated_ms"] + 3_000
    assert new not in master_call(account, "GET", f"/v1/keys/{key['id']}").text

    assert codes(statuses(gateway, old, 8)) == {200} and codes(statuses(gateway, new, 8)) == {200}
    events = account.events(str(key["id"]), 25)  # one key: the spend of both secrets adds up on it
    usage = account.key_usage(str(key["id"]))
    assert usage["spent_micros"] == sum(cast(int, e["cost_micros"]) for e in events)

    time.sleep(max(0.0, (grace_ends - now_ms()) / 1000 + 0.005))
    refused = statuses(gateway, old)
    assert codes(refused) == {401}
    assert "rotated" in refused[0].json()["error"]["message"]
    assert codes(statuses(gateway, new, 8)) == {200}

    # The CLI, with no grace: the secret it replaces stops at once (on each worker as the change arrives).
    env = {"SPENDGATE_CONTROLPLANE": gateway.grpc, "SPENDGATE_MASTER_KEY": account.master_key}
    result = spendgate("keys", "rotate", str(key["id"]), "--grace-seconds", "0", "--json", env=env)
    assert result.returncode == 0, result.stderr
    third = json.loads(result.stdout)
    MINTED_SECRETS.append(third["secret"])
    assert third["id"] == key["id"] and third["previous_secret_expires_ms"] is None
    deadline = time.monotonic() + 1
    while codes(statuses(gateway, new, 8)) != {401}:
        assert time.monotonic() < deadline, "a worker still served the replaced secret after 1 s"
    assert codes(statuses(gateway, new)) == {401} and codes(statuses(gateway, third["secret"], 8)) == {200}


def test_rotation_refusals_over_rest(account: Account) -> None:
    key = account.mint("u")
    too_long = master_call(account, "POST", f"/v1/keys/{key['id']}/rotate", {"grace_ms": 31 * 86_400_000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "grace_ms"
    negative = master_call(account, "POST", f"/v1/keys/{key['id']}/rotate", {"grace_ms": -1})
    assert negative.status_code == 400
    standard = httpx.post(
        account.gateway.base + f"/v1/keys/{key['id']}/rotate",
        headers={"Authorization": f"Bearer {key['secret']}"},
    )
    assert standard.status_code == 403
    assert master_call(account, "POST", "/v1/keys/key_missing/rotate").status_code == 404
    assert master_call(account, "GET", f"/v1/keys/{key['id']}").json()["rotated_ms"] is None


def test_metadata_is_edited_over_rest_and_usage_rolls_up_by_tag_from_real_traffic(
    gateway: Running, account: Account
) -> None:
    alice_1 = account.mint("a1", metadata={"user_id": "alice", "plan": "pro"})
    alice_2 = account.mint("a2")
    bob = account.mint("b", metadata={"user_id": "bob"})
    untagged = account.mint("anon")
    patched = master_call(account, "PATCH", f"/v1/keys/{alice_2['id']}", {"metadata": {"user_id": "alice"}})
    assert patched.status_code == 200 and patched.json()["metadata"] == {"user_id": "alice"}
    for metadata, fragment in [
        ({"user id": "x"}, "A-Z a-z 0-9"),
        ({"note": "x" * 513}, "at most 512"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 entries"),
        ({"user_id": 7}, "object of strings"),
    ]:
        bad = master_call(
            account, "PATCH", f"/v1/keys/{bob['id']}", {"name": "renamed", "metadata": metadata}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata", bad.text
        assert fragment in bad.json()["error"]["message"]
    kept = master_call(account, "GET", f"/v1/keys/{bob['id']}").json()
    assert (kept["name"], kept["metadata"]) == ("b", {"user_id": "bob"})  # nothing half-written

    start = now_ms()
    traffic = [(alice_1, 2, 10), (alice_2, 1, 40), (bob, 3, 5), (untagged, 1, 25)]
    for key, count, max_tokens in traffic:
        with sdk(gateway, key) as client:
            for _ in range(count):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens)
    cost = {
        str(k["id"]): sum(cast(int, e["cost_micros"]) for e in account.events(str(k["id"]), n))
        for k, n, _ in traffic
    }
    window = f"from_ms={start}&to_ms={now_ms() + 1}"
    usage = account.get(f"/v1/usage?{window}&group_by=metadata.user_id").json()
    assert usage["group_by"] == "metadata.user_id"
    groups = {g["value"]: g for g in usage["groups"]}
    tagged = {"alice": cost[str(alice_1["id"])] + cost[str(alice_2["id"])], "bob": cost[str(bob["id"])]}
    assert list(groups) == [*sorted(tagged, key=lambda v: (-tagged[v], v)), None]  # most cost first
    assert sorted(groups["alice"]["key_ids"]) == sorted([str(alice_1["id"]), str(alice_2["id"])])
    assert groups["alice"]["cost_micros"] == tagged["alice"] > 0
    assert (groups["alice"]["requests"], groups["bob"]["requests"], groups[None]["requests"]) == (3, 3, 1)
    assert groups["bob"]["cost_micros"] == cost[str(bob["id"])]
    assert (
        groups[None]["key_ids"] == [untagged["id"]]
        and groups[None]["cost_micros"] == cost[str(untagged["id"])]
    )
    assert all(
        isinstance(g["cost_micros"], int) and isinstance(g["fee_micros"], int) for g in groups.values()
    )
    by_key = {k["key_id"]: k for k in usage["by_key"]}
    assert by_key[alice_1["id"]]["metadata"] == {"user_id": "alice", "plan": "pro"}
    assert by_key[untagged["id"]]["metadata"] == {}
    assert "groups" not in account.get(f"/v1/usage?{window}").json()
    bad = account.get(f"/v1/usage?{window}&group_by=user_id")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"

    env = {"SPENDGATE_CONTROLPLANE": gateway.grpc, "SPENDGATE_MASTER_KEY": account.master_key}
    table = spendgate(
        "usage", "--from", str(start), "--to", str(now_ms() + 1), "--group-by", "metadata.user_id", env=env
    )
    assert table.returncode == 0, table.stderr
    lines: list[Any] = [line.split() for line in table.stdout.splitlines()]
    assert lines[0][0] == "METADATA.USER_ID" and [row[0] for row in lines[1:]] == [
        str(v) if v else "(none)" for v in groups
    ]


def test_metadata_or_models_of_the_wrong_type_are_400s_not_a_silent_clear(account: Account) -> None:
    key = account.mint("tagged", metadata={"user_id": "u1"})
    for metadata in ([], "", 0, False, ["user_id"]):
        for method, path in (("PATCH", f"/v1/keys/{key['id']}"), ("POST", "/v1/keys")):
            bad = master_call(account, method, path, {"name": "t2", "metadata": metadata})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata", (metadata, bad.text)
    kept = master_call(account, "GET", f"/v1/keys/{key['id']}").json()
    assert (kept["name"], kept["metadata"]) == ("tagged", {"user_id": "u1"})
    narrow = account.mint("narrow", allowed_models=["gpt-4o-mini"])
    not_lists: tuple[object, ...] = ({}, "", False, 0)
    for models in not_lists:  # never read as "no restriction"
        bad = master_call(account, "PATCH", f"/v1/keys/{narrow['id']}", {"allowed_models": models})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "allowed_models", bad.text
    shown = master_call(account, "GET", f"/v1/keys/{narrow['id']}").json()
    assert shown["allowed_models"] == ["gpt-4o-mini"]
    cleared = master_call(account, "PATCH", f"/v1/keys/{key['id']}", {"metadata": None}).json()
    assert cleared["metadata"] == {}  # null is how to clear it (and {} replaces it with nothing)


def test_the_cli_mints_a_trial_key_and_changes_its_expiry_and_metadata(
    gateway: Running, account: Account
) -> None:
    env = {"SPENDGATE_CONTROLPLANE": gateway.grpc, "SPENDGATE_MASTER_KEY": account.master_key}
    minted = spendgate(
        "keys",
        "mint",
        "trial",
        "--expires-at",
        "2099-01-31T12:00:00Z",
        "--meta",
        "user_id=9",
        "--json",
        env=env,
    )
    assert minted.returncode == 0, minted.stderr
    key = json.loads(minted.stdout)
    MINTED_SECRETS.append(key["secret"])
    assert (key["expires_at"], key["metadata"]) == ("2099-01-31T12:00:00Z", {"user_id": "9"})
    updated = spendgate("keys", "update", key["id"], "--no-expiry", "--clear-meta", "--json", env=env)
    assert updated.returncode == 0, updated.stderr
    assert (json.loads(updated.stdout)["expires_at"], json.loads(updated.stdout)["metadata"]) == (None, {})
    past = spendgate("keys", "mint", "late", "--expires-at", "2001-01-01", env=env)
    assert past.returncode != 0 and "expires_ms: must be in the future" in past.stderr
    both = spendgate("keys", "update", key["id"], "--expires-at", "2099-01-01", "--no-expiry", env=env)
    assert both.returncode != 0 and "cannot be combined" in both.stderr
