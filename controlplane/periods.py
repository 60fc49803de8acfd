"""Cap periods (UTC): where the current period started and when it resets."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta


class CapPeriod(enum.StrEnum):
    LIFETIME = "lifetime"
    DAILY = "daily"
    MONTHLY = "monthly"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def bounds(period: CapPeriod, now_ms: int) -> tuple[int, int]:
    """(start_ms, reset_ms) of the period containing now_ms; lifetime is (0, 0)."""
    if period is CapPeriod.LIFETIME:
        return 0, 0
    now = datetime.fromtimestamp(now_ms // 1000, UTC)
    if period is CapPeriod.DAILY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return _ms(start), _ms(start + timedelta(days=1))
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return _ms(start), _ms(following)


def week_start(now_ms: int) -> int:
    """Monday 00:00 UTC of the week containing now_ms (ISO weeks, as OpenRouter's usage_weekly)."""
    day = bounds(CapPeriod.DAILY, now_ms)[0]
    weekday = datetime.fromtimestamp(day // 1000, UTC).weekday()
    return day - weekday * 86_400_000
