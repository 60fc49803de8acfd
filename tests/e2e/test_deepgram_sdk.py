"""The official deepgram-sdk (v7), unchanged but for its environment's base URL,
through spendgate: pre-recorded transcription of uploaded audio and of a URL,
billed per second of `metadata.duration`, priced by the `model` query
parameter; caps, refusals and the provider key as an SDK user sees them."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import httpx
import pytest

with warnings.catch_warnings():  # deepgram-sdk imports a name websockets deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    import deepgram.listen.v1.client  # noqa: F401
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from fakeupstream.media import AUDIO_BYTES_PER_SECOND, url_seconds
from fakeupstream.server import MockUpstream, reply_text
from tests.e2e.conftest import UPSTREAM_DEEPGRAM_KEY, Account, Running

# micro-USD per million seconds (catalog_data/deepgram.toml)
PRICES = {"nova-3": 71_666_667, "nova-3:multilingual": 86_666_667, "nova-2": 71_666_667, "base": 80_000_000}
AUDIO = bytes(range(256)) * 125  # 32,000 bytes: 2 s of the mock's audio
URL = "https://example.com/recordings/call-42.wav"


def cost(model: str, audio_ms: int) -> int:
    return -(-audio_ms * PRICES[model] // 1_000_000_000)


def ms_of(audio: bytes) -> int:
    return -(-len(audio) * 1000 // AUDIO_BYTES_PER_SECOND)


@contextlib.contextmanager
def client(gateway: Running, key: dict[str, object] | str) -> Iterator[DeepgramClient]:
    """The SDK as a user points it elsewhere: through its environment."""
    secret = key if isinstance(key, str) else str(key["secret"])
    ws = gateway.base.replace("http://", "ws://")
    environment = DeepgramClientEnvironment(
        base=gateway.base, production=ws, agent=ws, agent_rest=gateway.base
    )
    with httpx.Client(timeout=60) as http:
        yield DeepgramClient(api_key=secret, environment=environment, httpx_client=http, max_retries=0)


@pytest.fixture
def sdk(gateway: Running, user_key: dict[str, object]) -> Iterator[DeepgramClient]:
    with client(gateway, user_key) as c:
        yield c


def assert_upstream_got_the_provider_key(mock: MockUpstream, key: dict[str, object]) -> None:
    received = mock.requests[-1]
    assert received.header("authorization") == f"Token {UPSTREAM_DEEPGRAM_KEY}"
    secret = str(key["secret"])
    assert secret not in received.query and all(secret not in v for _, v in received.headers)


def test_transcribe_file_is_billed_per_second_of_audio(
    sdk: DeepgramClient, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    result = sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3", smart_format=True)
    assert result.results.channels[0].alternatives[0].transcript == reply_text(16)
    received = mock.requests[-1]
    assert (received.path, received.body) == ("/v1/listen", AUDIO)  # the audio went through untouched
    assert "model=nova-3" in received.query and "smart_format=true" in received.query
    assert_upstream_got_the_provider_key(mock, user_key)
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["provider"], event["model"], event["status"]) == ("deepgram", "nova-3", "ok")
    assert (event["audio_ms"], event["estimated"], event["input_tokens"]) == (2000, False, 0)
    assert event["cost_micros"] == cost("nova-3", 2000)


def test_transcribe_url_and_odd_durations_round_up_to_the_millisecond(
    sdk: DeepgramClient, account: Account, user_key: dict[str, object]
) -> None:
    sdk.listen.v1.media.transcribe_url(url=URL, model="nova-2")
    odd = AUDIO[:12_345]  # 0.7715625 s
    sdk.listen.v1.media.transcribe_file(request=odd, model="nova-2-phonecall")  # an option: its tier's price
    events = account.events(str(user_key["id"]), 2)
    by_ms = sorted((int(str(e["audio_ms"])), e["model"], e["cost_micros"]) for e in events)
    url_ms = int(url_seconds(URL) * 1000)
    assert by_ms == sorted([(url_ms, "nova-2", cost("nova-2", url_ms)), (772, "nova-2", cost("nova-2", 772))])
    assert ms_of(odd) == 772


def test_default_model_multilingual_and_multichannel(
    sdk: DeepgramClient, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    sdk.listen.v1.media.transcribe_file(request=AUDIO)  # no model: Deepgram's default, base
    assert "model=" not in mock.requests[-1].query  # nothing added to what the client asked for
    sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3", language="multi")
    sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3", multichannel=True)
    events = account.events(str(user_key["id"]), 3)
    got = sorted((str(e["model"]), int(str(e["audio_ms"])), e["cost_micros"]) for e in events)
    assert got == [
        ("base", 2000, cost("base", 2000)),
        ("nova-3", 4000, cost("nova-3", 4000)),  # the mock's 2 channels, each billed
        ("nova-3:multilingual", 2000, cost("nova-3:multilingual", 2000)),
    ]


def test_callback_requests_are_refused_in_deepgrams_shape_and_nothing_is_held(
    sdk: DeepgramClient, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    """A callback's transcript never passes the gateway, so it could not be billed."""
    seen = len(mock.requests)
    with pytest.raises(ApiError) as info:
        sdk.listen.v1.media.transcribe_file(
            request=AUDIO, model="nova-3", callback="https://example.com/hook"
        )
    assert info.value.status_code == 400
    assert info.value.body["err_code"] == "Bad Request"
    assert "`callback`" in info.value.body["err_msg"]
    assert len(mock.requests) == seen  # nothing was forwarded
    usage = account.key_usage(str(user_key["id"]))
    assert (usage["events"], usage["reserved_micros"]) == ([], 0)


def test_over_cap_is_402_before_any_byte_goes_upstream(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("capped-stt", max_spend_usd="0.0001")  # 100 micros: under a second's worth x 2
    with client(gateway, key) as sdk:
        sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3")
        account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(ApiError) as info:
            sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3")
    assert info.value.status_code == 402
    assert info.value.body["err_code"] == "ASR_PAYMENT_REQUIRED"
    assert "Spend cap reached" in info.value.body["err_msg"]
    assert len(mock.requests) == seen  # nothing was forwarded


def test_strict_keys_reserve_an_hour_for_a_url_but_seconds_for_a_small_file(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    # 4 cents: a 32 KB upload reserves at most 64 s (4 kbit/s floor), ~0.5 cent;
    # a URL reserves the operator's max_audio_seconds (one hour), ~26 cents.
    key = account.mint("strict-stt", max_spend_usd="0.04", strict=True)
    with client(gateway, key) as sdk:
        sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3")
        seen = len(mock.requests)
        with pytest.raises(ApiError) as info:
            sdk.listen.v1.media.transcribe_url(url=URL, model="nova-3")
    assert info.value.status_code == 402 and len(mock.requests) == seen


def test_refusals_come_back_in_deepgram_shape(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    with client(gateway, user_key) as sdk, pytest.raises(ApiError) as unknown:
        sdk.listen.v1.media.transcribe_file(request=AUDIO, model="whisper-imaginary")
    assert unknown.value.status_code == 400 and "whisper-imaginary" in unknown.value.body["err_msg"]
    with client(gateway, "sg_live_" + "x" * 43) as sdk, pytest.raises(ApiError) as bad_key:
        sdk.listen.v1.media.transcribe_file(request=AUDIO, model="nova-3")
    assert bad_key.value.status_code == 401 and bad_key.value.body["err_code"] == "INVALID_AUTH"
    assert len(mock.requests) == seen
    with client(gateway, user_key) as sdk, pytest.raises(ApiError) as upstream:
        sdk.listen.v1.media.transcribe_file(
            request=AUDIO, model="nova-3", request_options={"additional_headers": {"x-mock-status": "503"}}
        )
    assert upstream.value.status_code == 503
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["cost_micros"], event["status"]) == (0, "upstream_error")
