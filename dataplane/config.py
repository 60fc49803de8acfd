"""Data-plane settings: where the control plane is, and each upstream provider's
base URL and API key.

Per provider, `SPENDGATE_<PROVIDER>_BASE_URL` and `SPENDGATE_<PROVIDER>_API_KEY`
(falling back to the provider's usual variable, e.g. OPENAI_API_KEY). Base URLs
follow each provider's own SDK convention: `…/v1` for OpenAI and the
OpenAI-compatible providers, the bare origin for Anthropic, Google,
ElevenLabs and Deepgram. A TOML file (SPENDGATE_CONFIG) may set the same; the
environment wins:

    [upstreams.openai]
    base_url = "https://api.openai.com/v1"
    api_key = "sk-…"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ProviderDefaults:
    base_url: str
    key_variables: tuple[str, ...]  # the provider's usual variables, first found wins
    auth_header: str  # the header the provider's own SDK sends its key in
    auth_scheme: str = ""  # "Bearer", "Token", or "" for the bare key
    # OpenAI-style base URLs carry the version (…/v1) and the gateway path's /v1 is dropped;
    # the others are bare origins and the gateway path is appended whole.
    versioned_base: bool = True
    # Whether streams may be sent stream_options.include_usage (Mistral once answered 422).
    stream_usage_option: bool = True


PROVIDERS: dict[str, ProviderDefaults] = {
    "openai": ProviderDefaults("https://api.openai.com/v1", ("OPENAI_API_KEY",), "authorization", "Bearer"),
    "anthropic": ProviderDefaults(
        "https://api.anthropic.com", ("ANTHROPIC_API_KEY",), "x-api-key", versioned_base=False
    ),
    "google": ProviderDefaults(
        "https://generativelanguage.googleapis.com",
        ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
        "x-goog-api-key",
        versioned_base=False,
    ),
    "elevenlabs": ProviderDefaults(
        "https://api.elevenlabs.io", ("ELEVENLABS_API_KEY",), "xi-api-key", versioned_base=False
    ),
    "deepgram": ProviderDefaults(
        "https://api.deepgram.com", ("DEEPGRAM_API_KEY",), "authorization", "Token", versioned_base=False
    ),
    "xai": ProviderDefaults("https://api.x.ai/v1", ("XAI_API_KEY",), "authorization", "Bearer"),
    "qwen": ProviderDefaults(
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        ("DASHSCOPE_API_KEY",),
        "authorization",
        "Bearer",
    ),
    "moonshot": ProviderDefaults(
        "https://api.moonshot.ai/v1", ("MOONSHOT_API_KEY",), "authorization", "Bearer"
    ),
    "minimax": ProviderDefaults("https://api.minimax.io/v1", ("MINIMAX_API_KEY",), "authorization", "Bearer"),
    "deepseek": ProviderDefaults(
        "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), "authorization", "Bearer"
    ),
    "mistral": ProviderDefaults(
        "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",),
        "authorization",
        "Bearer",
        stream_usage_option=False,
    ),
    "cerebras": ProviderDefaults(
        "https://api.cerebras.ai/v1", ("CEREBRAS_API_KEY",), "authorization", "Bearer"
    ),
}
# Providers that speak OpenAI's chat-completions wire format, routed by model name.
OPENAI_COMPATIBLE = ("openai", "xai", "qwen", "moonshot", "minimax", "deepseek", "mistral", "cerebras")


@dataclass(frozen=True)
class Upstream:
    provider: str
    base_url: str  # no trailing slash
    api_key: str
    defaults: ProviderDefaults

    def auth_headers(self) -> dict[str, str]:
        scheme = self.defaults.auth_scheme
        return {self.defaults.auth_header: f"{scheme} {self.api_key}" if scheme else self.api_key}

    def url(self, gateway_path: str, query: str) -> str:
        path = gateway_path.removeprefix("/v1") if self.defaults.versioned_base else gateway_path
        return self.base_url + path + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Settings:
    controlplane: str
    service_token: str
    upstreams: Mapping[str, Upstream]
    max_body_bytes: int = 32 * 1024 * 1024
    # Reservation bound for audio the provider fetches itself (Deepgram `{"url": …}`), in seconds.
    max_audio_seconds: int = 3600
    # Reservation bound for input the request only refers to (a stored conversation, a cached
    # context, a document by URL), in tokens: the largest context window among the catalog's models.
    max_referenced_input_tokens: int = 1_048_576
    key_cache_ttl_seconds: float = 30.0
    reservation_ttl_ms: int = 10 * 60 * 1000
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    # How long a stream is still read after its client left, for the provider's own usage
    # counts (metering.py); past it, or at 0, it is cut and billed as estimated (billing.py).
    drain_seconds: float = 120.0
    upstream_client: str = "aiohttp"  # or "httpx" (httpx2): dataplane/forward.py
    spool_dir: Path | None = None
    # Budget blocks for busy keys (budget.py); off, every metered request does a Reserve round trip.
    grants: bool = True
    # Deepgram `callback=` requests are free to the user (the gateway never sees the transcript):
    # refused unless this is on.
    deepgram_callbacks: bool = False
    # If set, GET /metrics asks for `Authorization: Bearer <it>` (docs/observability.md).
    metrics_token: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        file: dict[str, dict[str, str]] = {}
        if env.get("SPENDGATE_CONFIG"):
            doc = tomllib.loads(Path(env["SPENDGATE_CONFIG"]).read_text())
            file = doc.get("upstreams", {})
        upstreams = {}
        for name, defaults in PROVIDERS.items():
            upper = name.upper()
            from_file = file.get(name, {})
            base = env.get(f"SPENDGATE_{upper}_BASE_URL") or from_file.get("base_url") or defaults.base_url
            key = (
                env.get(f"SPENDGATE_{upper}_API_KEY")
                or next((env[v] for v in defaults.key_variables if env.get(v)), None)
                or from_file.get("api_key")
                or ""
            )
            upstreams[name] = Upstream(name, base.rstrip("/"), key, defaults)
        token = env.get("SPENDGATE_SERVICE_TOKEN", "")
        if not token and env.get("SPENDGATE_DATA_DIR"):
            token_file = Path(env["SPENDGATE_DATA_DIR"]) / "service-token"
            token = token_file.read_text().strip() if token_file.exists() else ""
        return cls(
            controlplane=env.get("SPENDGATE_CONTROLPLANE", "127.0.0.1:50051"),
            service_token=token,
            upstreams=upstreams,
            max_body_bytes=int(env.get("SPENDGATE_MAX_BODY_BYTES", 32 * 1024 * 1024)),
            max_audio_seconds=int(env.get("SPENDGATE_MAX_AUDIO_SECONDS", 3600)),
            max_referenced_input_tokens=int(env.get("SPENDGATE_MAX_REFERENCED_INPUT_TOKENS", 1_048_576)),
            key_cache_ttl_seconds=float(env.get("SPENDGATE_KEY_CACHE_TTL", 30.0)),
            upstream_connect_timeout=float(env.get("SPENDGATE_UPSTREAM_CONNECT_TIMEOUT", 10.0)),
            upstream_read_timeout=float(env.get("SPENDGATE_UPSTREAM_READ_TIMEOUT", 600.0)),
            drain_seconds=float(env.get("SPENDGATE_DRAIN_SECONDS", 120.0)),
            upstream_client=_choice(env, "SPENDGATE_UPSTREAM_CLIENT", ("aiohttp", "httpx")),
            spool_dir=_spool_dir(env),
            reservation_ttl_ms=int(env.get("SPENDGATE_RESERVATION_TTL_MS", 10 * 60 * 1000)),
            grants=_flag(env.get("SPENDGATE_GRANTS", "on")),
            deepgram_callbacks=_flag(env.get("SPENDGATE_DEEPGRAM_CALLBACKS", "off")),
            metrics_token=env.get("SPENDGATE_METRICS_TOKEN", ""),
        )


def _spool_dir(env: Mapping[str, str]) -> Path | None:
    """SPENDGATE_SPOOL_DIR, else the data dir's spool (as `spendgate up` lays it out); never
    the working directory. None (no spool: settlements are not durable) only for a worker
    built without either, as the in-process tests build theirs."""
    if env.get("SPENDGATE_SPOOL_DIR"):
        return Path(env["SPENDGATE_SPOOL_DIR"])
    if env.get("SPENDGATE_DATA_DIR"):
        return Path(env["SPENDGATE_DATA_DIR"]) / "spool"
    return None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, choices[0])
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _flag(value: str) -> bool:
    return value.lower() not in ("0", "off", "false", "no")
