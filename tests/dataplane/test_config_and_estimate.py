"""Upstream settings (environment over file over defaults) and the upper-bound estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.config import Settings
from dataplane.errors import UnknownModel
from dataplane.estimate import output_limit, upper_bound_micros
from dataplane.pricing import Catalog, ModelPrice

MINI = ModelPrice("openai", "gpt-4o-mini", 150_000, 600_000, 75_000, None, 16_384)
SONNET = ModelPrice("anthropic", "claude-sonnet-4-6", 3_000_000, 15_000_000, 300_000, 3_750_000, 64_000)


def test_defaults_are_the_real_providers() -> None:
    settings = Settings.from_env({})
    assert settings.upstreams["openai"].base_url == "https://api.openai.com/v1"
    assert settings.upstreams["anthropic"].base_url == "https://api.anthropic.com"
    assert settings.upstreams["openai"].api_key == ""


def test_environment_wins_over_file_and_usual_variables_are_a_fallback(tmp_path: Path) -> None:
    config = tmp_path / "spendgate.toml"
    config.write_text(
        '[upstreams.openai]\nbase_url = "http://file.example/v1"\napi_key = "sk-file"\n'
        '[upstreams.anthropic]\nbase_url = "http://file.example/"\napi_key = "sk-ant-file"\n'
    )
    env = {
        "SPENDGATE_CONFIG": str(config),
        "SPENDGATE_OPENAI_BASE_URL": "http://env.example/v1/",
        "OPENAI_API_KEY": "sk-usual",
    }
    settings = Settings.from_env(env)
    openai, anthropic = settings.upstreams["openai"], settings.upstreams["anthropic"]
    assert (openai.base_url, openai.api_key) == ("http://env.example/v1", "sk-usual")
    assert (anthropic.base_url, anthropic.api_key) == ("http://file.example", "sk-ant-file")
    assert openai.auth_headers() == {"authorization": "Bearer sk-usual"}
    assert anthropic.auth_headers() == {"x-api-key": "sk-ant-file"}
    explicit = Settings.from_env({**env, "SPENDGATE_OPENAI_API_KEY": "sk-explicit"})
    assert explicit.upstreams["openai"].api_key == "sk-explicit"


def test_service_token_from_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "service-token").write_text("tok\n")
    assert Settings.from_env({"SPENDGATE_DATA_DIR": str(tmp_path)}).service_token == "tok"


def test_output_limit_takes_the_request_limit_capped_by_the_catalog() -> None:
    assert output_limit({"max_tokens": 100}, MINI) == 100
    assert output_limit({"max_completion_tokens": 50, "max_tokens": 100}, MINI) == 100  # the larger
    assert output_limit({"max_output_tokens": 10**9}, MINI) == 16_384
    assert output_limit({}, MINI) == 16_384
    assert output_limit({"max_tokens": "100"}, MINI) == 16_384  # wrong type: fall back to the bound
    assert output_limit({"max_tokens": -5}, MINI) == 16_384
    assert output_limit({"max_tokens": True}, MINI) == 16_384  # JSON true is not a limit of 1


def test_estimate_bounds_the_real_cost_from_above() -> None:
    # Any token may be a cache write, the dearest input kind for Claude.
    assert upper_bound_micros(1000, {"max_tokens": 100}, SONNET) == -(
        -(1000 * 3_750_000 + 100 * 15_000_000) // 10**6
    )
    assert upper_bound_micros(1000, {"max_tokens": 100}, MINI) == 150 + 60


def test_catalog_resolves_plain_and_qualified_names_within_the_route() -> None:
    catalog = Catalog([MINI, SONNET])
    assert catalog.resolve("gpt-4o-mini", ("openai",)) is MINI
    assert catalog.resolve("openai/gpt-4o-mini", ("openai",)) is MINI
    with pytest.raises(UnknownModel):
        catalog.resolve("claude-sonnet-4-6", ("openai",))  # an Anthropic model on an OpenAI route
    with pytest.raises(UnknownModel):
        catalog.resolve("gpt-nope", ("openai",))


FLASH = ModelPrice("google", "gemini-2.5-flash", 300_000, 2_500_000, 30_000, None, 65_536)


def test_gemini_output_limit_is_in_generation_config_and_applies_per_candidate() -> None:
    assert output_limit({"generationConfig": {"maxOutputTokens": 100}}, FLASH) == 100
    assert output_limit({"generationConfig": {"maxOutputTokens": 10**9}}, FLASH) == 65_536
    # The Gemini API reads proto field names too (test_estimate_bounds.py has the snake_case cases).
    assert output_limit({"generationConfig": {"max_output_tokens": 5}}, FLASH) == 5
    assert output_limit({"generationConfig": "nope"}, FLASH) == 65_536
    body = {"generationConfig": {"maxOutputTokens": 100, "candidateCount": 3}}
    assert upper_bound_micros(1000, body, FLASH) == -(-(1000 * 300_000 + 300 * 2_500_000) // 10**6)
    assert upper_bound_micros(1000, {"generationConfig": {"candidateCount": True}}, FLASH) == -(
        -(1000 * 300_000 + 65_536 * 2_500_000) // 10**6
    )


def test_gemini_upstream_url_keeps_the_version_and_the_query() -> None:
    google = Settings.from_env({"SPENDGATE_GOOGLE_BASE_URL": "http://mock:1/"}).upstreams["google"]
    url = google.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse")
    assert url == "http://mock:1/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert google.auth_headers() == {"x-goog-api-key": ""}
    deepseek = Settings.from_env({"SPENDGATE_DEEPSEEK_BASE_URL": "http://mock:1/deepseek/v1"}).upstreams[
        "deepseek"
    ]
    assert deepseek.url("/v1/chat/completions", "") == "http://mock:1/deepseek/v1/chat/completions"


def test_catalog_keeps_gemini_on_google_routes() -> None:
    catalog = Catalog([MINI, FLASH])
    assert catalog.resolve("gemini-2.5-flash", ("google",)) is FLASH
    with pytest.raises(UnknownModel):
        catalog.resolve("gemini-2.5-flash", ("openai", "xai"))  # not on the OpenAI-style routes
