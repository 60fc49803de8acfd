"""Data-plane settings: where the control plane is, and each upstream provider's
base URL and API key.

Per provider, `SPENDGATE_<PROVIDER>_BASE_URL` and `SPENDGATE_<PROVIDER>_API_KEY`
(falling back to the provider's usual variable, e.g. OPENAI_API_KEY). Base URLs
follow each provider's own SDK convention: `…/v1` for OpenAI, the bare origin
for Anthropic. A TOML file (SPENDGATE_CONFIG) may set the same; the
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
    key_variable: str
    auth_header: str  # "authorization" (Bearer) or "x-api-key"


PROVIDERS: dict[str, ProviderDefaults] = {
    "openai": ProviderDefaults("https://api.openai.com/v1", "OPENAI_API_KEY", "authorization"),
    "anthropic": ProviderDefaults("https://api.anthropic.com", "ANTHROPIC_API_KEY", "x-api-key"),
}


@dataclass(frozen=True)
class Upstream:
    provider: str
    base_url: str  # no trailing slash
    api_key: str
    auth_header: str

    def auth_headers(self) -> dict[str, str]:
        if self.auth_header == "authorization":
            return {"authorization": f"Bearer {self.api_key}"}
        return {self.auth_header: self.api_key}


@dataclass(frozen=True)
class Settings:
    controlplane: str
    service_token: str
    upstreams: Mapping[str, Upstream]
    max_body_bytes: int = 32 * 1024 * 1024
    key_cache_ttl_seconds: float = 30.0
    reservation_ttl_ms: int = 10 * 60 * 1000
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    spool_dir: Path | None = None
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
                or env.get(defaults.key_variable)
                or from_file.get("api_key")
                or ""
            )
            upstreams[name] = Upstream(name, base.rstrip("/"), key, defaults.auth_header)
        token = env.get("SPENDGATE_SERVICE_TOKEN", "")
        if not token and env.get("SPENDGATE_DATA_DIR"):
            token_file = Path(env["SPENDGATE_DATA_DIR"]) / "service-token"
            token = token_file.read_text().strip() if token_file.exists() else ""
        return cls(
            controlplane=env.get("SPENDGATE_CONTROLPLANE", "127.0.0.1:50051"),
            service_token=token,
            upstreams=upstreams,
            max_body_bytes=int(env.get("SPENDGATE_MAX_BODY_BYTES", 32 * 1024 * 1024)),
            key_cache_ttl_seconds=float(env.get("SPENDGATE_KEY_CACHE_TTL", 30.0)),
            upstream_connect_timeout=float(env.get("SPENDGATE_UPSTREAM_CONNECT_TIMEOUT", 10.0)),
            upstream_read_timeout=float(env.get("SPENDGATE_UPSTREAM_READ_TIMEOUT", 600.0)),
            spool_dir=Path(env.get("SPENDGATE_SPOOL_DIR", "./spendgate-spool")),
            reservation_ttl_ms=int(env.get("SPENDGATE_RESERVATION_TTL_MS", 10 * 60 * 1000)),
        )
