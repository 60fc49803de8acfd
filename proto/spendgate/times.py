"""Points in time as the APIs show them: epoch milliseconds inside, ISO-8601 UTC outside
(`2027-01-31T23:59:59Z`, OpenRouter's `expires_at`). Shared by the REST facade, the CLI
and the control plane's messages, so a time reads the same everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

# datetime's range; a later instant cannot be written as ISO-8601 anyway.
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC: whole seconds without a fraction, else milliseconds."""
    moment = datetime.fromtimestamp(min(max(ms, 0), MAX_MS) / 1000, UTC)
    text = moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    """An ISO-8601 date-time that names its offset (`Z`, `+02:00`) as epoch milliseconds.
    ValueError, saying why, for anything else: a time without an offset is ambiguous."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {text[:64]!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text[:64]!r} has no UTC offset: end it with Z (UTC) or +hh:mm")
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND
    if micros % 1000:
        raise ValueError(f"{text[:64]!r} is finer than a millisecond")
    return micros // 1000


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
