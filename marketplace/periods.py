"""Report periods: one UTC calendar month from ?month=YYYY-MM, refused with a message that says what to change."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone

MONTH_RULE = "Month: give a month as YYYY-MM, e.g. 2026-11"
EARLIEST_YEAR = 2000


@dataclass(frozen=True)
class Month:
    year: int
    number: int

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.number, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive)."""
        return datetime(self.year + self.number // 12, self.number % 12 + 1, 1, tzinfo=UTC)

    @property
    def days(self) -> list[date]:
        first = self.start.date()
        return [first + timedelta(days=i) for i in range((self.end - self.start).days)]

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.number:02d}"


def current_month() -> Month:
    now = timezone.now().astimezone(UTC)
    return Month(now.year, now.month)


def parse_month(text: str) -> tuple[Month | None, str | None]:
    """Return the month `text` names (YYYY-MM, 2000-01 to the current month) or an error message; "" is None."""
    if not text:
        return None, None
    match = re.fullmatch(r"(\d{4})-(\d{2})", text[:20])
    if match is None or not EARLIEST_YEAR <= int(match.group(1)) <= 9999 or not 1 <= int(match.group(2)) <= 12:
        return None, f"{MONTH_RULE}."
    month = Month(int(match.group(1)), int(match.group(2)))
    latest = current_month()
    if (month.year, month.number) > (latest.year, latest.number):
        return None, f"{MONTH_RULE}; {month} has not begun yet (the latest is {latest})."
    return month, None
