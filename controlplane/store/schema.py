"""The schema, in SQLAlchemy Core. Portable SQL only: the same tables run on
SQLite, PostgreSQL and PostgreSQL-compatible distributed engines.

Money columns are BIGINT micro-USD. Counters on `keys` and `accounts` are the
ledger's running totals; `usage_events` and `reservations` are the detail they
must always add up to (see ledger.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Seq = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("credit_micros", BigInteger, nullable=False),
    Column("spent_micros", BigInteger, nullable=False),
    Column("reserved_micros", BigInteger, nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("secret_sha256", LargeBinary(32), nullable=False, unique=True),
    Column("secret_prefix", String(20), nullable=False),
    Column("cap_micros", BigInteger, nullable=True),
    Column("cap_period", String(16), nullable=False),
    Column("strict", Boolean, nullable=False),
    Column("allowed_models", Text, nullable=False),  # JSON list
    Column("metadata", Text, nullable=False),  # JSON object
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    Column("spent_micros", BigInteger, nullable=False),
    Column("reserved_micros", BigInteger, nullable=False),
    Column("period_start_ms", BigInteger, nullable=False),
    # Key lifecycle (controlplane/lifecycle.py): refused from expires_ms on; a rotation keeps the
    # replaced secret's digest, which authenticates the same key until old_secret_expires_ms.
    Column("expires_ms", BigInteger, nullable=True),
    Column("old_secret_sha256", LargeBinary(32), nullable=True),
    Column("old_secret_expires_ms", BigInteger, nullable=True),
    Column("rotated_ms", BigInteger, nullable=True),
    # Rate limits (controlplane/ratelimits.py); NULL: none. Their counters are in rate_buckets.
    Column("rpm_limit", BigInteger, nullable=True),
    Column("tpm_limit", BigInteger, nullable=True),
    Column("max_parallel_requests", Integer, nullable=True),
    Index("ix_keys_account_seq", "account_id", "seq"),
    Index("ix_keys_old_secret_sha256", "old_secret_sha256", unique=True),
)

reservations = Table(
    "reservations",
    metadata,
    Column("request_id", String(100), primary_key=True),
    Column("key_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),  # held on the key
    Column("wallet_micros", BigInteger, nullable=False),  # held on the wallet (amount + fee)
    Column("state", String(16), nullable=False),  # active | settled | released | expired
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # What it holds of its key's rate limits while active (ratelimits.py): a request its one
    # request and its token estimate, given back when released, and its slot in flight; a
    # grant only its slots (its slice's unused part comes back with its release).
    Column("requests", Integer, nullable=False, server_default="0"),
    Column("tokens", BigInteger, nullable=False, server_default="0"),
    Column("slots", Integer, nullable=False, server_default="0"),
    Index("ix_reservations_state_expires", "state", "expires_ms"),
    Index("ix_reservations_key_state", "key_id", "state"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("key_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("provider", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("audio_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("audio_output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("characters", BigInteger, nullable=False, server_default="0"),
    Column("audio_ms", BigInteger, nullable=False, server_default="0"),
    Column("images", BigInteger, nullable=False, server_default="0"),
    Column("cache_write_1h_tokens", BigInteger, nullable=False, server_default="0"),
    Column("image_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("web_searches", BigInteger, nullable=False, server_default="0"),
    Column("file_searches", BigInteger, nullable=False, server_default="0"),
    Column("service_tier", String(40), nullable=False, server_default=""),
    # Which of the price row's rules priced it (a prompt-length tier, a time-of-day window).
    Column("price_rules", String(200), nullable=False, server_default=""),
    Column("cost_micros", BigInteger, nullable=False),
    Column("fee_micros", BigInteger, nullable=False),
    Column("latency_ms", BigInteger, nullable=False),
    Column("ttfb_ms", BigInteger, nullable=False),
    Column("status", String(24), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Index("ix_usage_events_account_ts", "account_id", "ts_ms"),
    Index("ix_usage_events_key_seq", "key_id", "seq"),
)

prices = Table(
    "prices",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("provider", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("effective_from_ms", BigInteger, nullable=False),
    Column("input_micros_per_mtok", BigInteger, nullable=False),
    Column("output_micros_per_mtok", BigInteger, nullable=False),
    Column("cached_input_micros_per_mtok", BigInteger, nullable=True),
    Column("cache_write_micros_per_mtok", BigInteger, nullable=True),
    Column("max_output_tokens", BigInteger, nullable=False),
    Column("audio_input_micros_per_mtok", BigInteger, nullable=True),
    Column("audio_output_micros_per_mtok", BigInteger, nullable=True),
    Column("characters_micros_per_mchar", BigInteger, nullable=True),
    Column("audio_seconds_micros_per_msec", BigInteger, nullable=True),
    Column("images_micros_per_mimage", BigInteger, nullable=True),
    Column("cache_write_1h_micros_per_mtok", BigInteger, nullable=True),
    Column("image_input_micros_per_mtok", BigInteger, nullable=True),
    Column("web_search_micros_per_mcall", BigInteger, nullable=True),
    Column("request_micros_per_mrequest", BigInteger, nullable=True),
    Column("file_search_micros_per_mcall", BigInteger, nullable=True),
    Column("rules", Text, nullable=False, server_default="[]"),  # JSON: money.Rule, in order
    Column("source", Text, nullable=False),
    # "catalog" rows come from catalog files at start-up, "api" rows from UpsertPrice.
    Column("origin", String(16), nullable=False),
    UniqueConstraint("provider", "model", "effective_from_ms", name="uq_prices_model_from"),
)

# A rate-limited key's token buckets and its slots in flight (controlplane/ratelimits.py):
# levels are scaled by 60 000 (one request or token a minute refills one unit a millisecond).
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("requests_level", BigInteger, nullable=False),
    Column("tokens_level", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("in_flight", Integer, nullable=False),
)

key_changes = Table(
    "key_changes",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("key_id", String(40), nullable=False),
    Column("kind", String(16), nullable=False),  # created | updated | revoked
    Column("created_ms", BigInteger, nullable=False),
)

# Threshold webhooks (see controlplane/alerts.py and controlplane/webhooks.py). One endpoint per account;
# its secret is kept (not hashed): every delivery is signed with it.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", String(100), nullable=False),
    Column("event_types", Text, nullable=False),  # JSON list; empty: every type
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# A key without a row has the default thresholds (alerts.DEFAULT_PERCENTS).
key_thresholds = Table(
    "key_thresholds",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("percents", String(400), nullable=False),  # JSON list of integers 1..100, ascending
)

# An account without a row gets no wallet.low events.
wallet_thresholds = Table(
    "wallet_thresholds",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("low_micros", BigInteger, nullable=False),
)

# The outbox: an event is written in the transaction that commits the spend behind it, and
# delivered from here. `event_id` is derived from what the event is about (alerts.event_id), so
# the unique constraint is what makes an event fire once, whichever replica saw it first.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("body", Text, nullable=False),  # the exact bytes every attempt sends
    Column("created_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=False),  # a deliverer holds the row until then
    Column("lease_token", String(40), nullable=False),
    Column("last_error", Text, nullable=False),
    Column("last_status_code", Integer, nullable=False),  # 0: no HTTP answer
    Column("delivered_ms", BigInteger, nullable=True),
    UniqueConstraint("event_id", name="uq_webhook_outbox_event_id"),
    Index("ix_webhook_outbox_status_next", "status", "next_attempt_ms"),
    Index("ix_webhook_outbox_account_seq", "account_id", "seq"),
)

# One row per billing-system sink (controlplane/exports): the last usage_events.seq the sink
# acknowledged, and who may move it. `position` only moves forward, after the sink said yes.
export_cursors = Table(
    "export_cursors",
    metadata,
    Column("sink", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # stripe | lago | openmeter
    Column("position", BigInteger, nullable=False),  # every event with seq <= position is delivered
    Column("exported", BigInteger, nullable=False),  # events delivered, all time
    Column("created_ms", BigInteger, nullable=False),
    Column("last_success_ms", BigInteger, nullable=True),
    Column("last_error", Text, nullable=False),  # empty after a success
    Column("last_error_ms", BigInteger, nullable=True),
    Column("failures", Integer, nullable=False),  # consecutive failed attempts
    # A lease, so that of several control planes over one database one exports a sink at a time.
    Column("owner", String(64), nullable=False),
    Column("lease_until_ms", BigInteger, nullable=False),
)
