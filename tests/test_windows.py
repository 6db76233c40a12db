"""Maintenance window arithmetic (arcext.upgrades.windows): Azure's recurEvery forms, time zones, daylight saving."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule

from arcext.upgrades.windows import Window, WindowError

FORMS = [
    "Day",
    "3Days",
    "Week",
    "3Weeks",
    "Week Saturday,Sunday",
    "2Weeks Monday",
    "Month",
    "2Months",
    "Month day23,day24",
    "Month day-1",
    "Month Last Sunday",
    "Month Fourth Monday",
    "Month Last Sunday Offset-3",
    "Month Third Sunday Offset6",
]


def _window(recur: str, start: str = "2024-01-31 22:00", tz: str = "Pacific Standard Time", **more: str) -> Window:
    return Window.parse({"startDateTime": start, "duration": "02:00", "timeZone": tz, "recurEvery": recur, **more})


def _reference(w: Window, now: datetime) -> tuple[datetime, datetime] | None:
    """The same question answered the slow way: every occurrence from the configuration's own start."""
    r = w.recurrence
    kwargs: dict[str, object] = {}
    if r.byweekday is not None:
        kwargs["byweekday"] = r.byweekday
    if r.bymonthday is not None:
        kwargs["bymonthday"] = r.bymonthday
    if r.freq == rrule.MONTHLY and r.byweekday is None and r.bymonthday is None:
        kwargs["bymonthday"] = (w.start.day,)
    for base in rrule.rrule(r.freq, dtstart=w.start, interval=r.interval, **kwargs):  # type: ignore[arg-type]
        local = base + timedelta(days=r.offset_days)
        if local < w.start:
            continue
        start = local.replace(tzinfo=w.tz).astimezone(UTC).astimezone(w.tz)
        end = (start.astimezone(UTC) + w.duration).astimezone(w.tz)
        if end > now:
            return start, end
    return None


@pytest.mark.parametrize("recur", FORMS)
def test_every_documented_form_agrees_with_a_walk_from_the_start(recur: str) -> None:
    w = _window(recur)
    rng = random.Random(recur)
    for _ in range(40):
        now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))
        assert w.current_or_next(now) == _reference(w, now), (recur, now)


def test_weekly_window_keeps_its_wall_clock_across_daylight_saving() -> None:
    w = _window("Week Saturday", start="2026-03-01 22:00")
    now = datetime(2026, 3, 1, tzinfo=UTC)
    seen = []
    for _ in range(3):
        found = w.current_or_next(now)
        assert found is not None
        start, end = found
        seen.append((start.strftime("%a %H:%M"), start.utcoffset(), end - start))
        now = end
    assert seen == [
        ("Sat 22:00", timedelta(hours=-8), timedelta(hours=2)),  # 7 March: PST
        ("Sat 22:00", timedelta(hours=-7), timedelta(hours=2)),  # 14 March: PDT (the change was on the 8th)
        ("Sat 22:00", timedelta(hours=-7), timedelta(hours=2)),
    ]
    inside = datetime(2026, 3, 15, 5, 30, tzinfo=UTC)  # 22:30 PDT on Saturday 14 March
    assert w.is_open(inside) and not w.is_open(inside + timedelta(hours=2))


def test_time_zones_windows_names_and_iana() -> None:
    assert _window("Day", tz="W. Europe Standard Time").tz == ZoneInfo("Europe/Berlin")
    assert _window("Day", tz="UTC").current_or_next(datetime(2024, 2, 1, tzinfo=UTC)) is not None
    assert _window("Day", tz="Asia/Tokyo").tz == ZoneInfo("Asia/Tokyo")
    with pytest.raises(WindowError):
        _window("Day", tz="../../etc/passwd")


def test_expiration_ends_the_windows() -> None:
    w = _window("Day", start="2024-01-01 10:00", tz="UTC", expirationDateTime="2024-01-03 10:00")
    assert w.is_open(datetime(2024, 1, 2, 11, tzinfo=UTC))
    assert w.current_or_next(datetime(2024, 1, 3, 12, tzinfo=UTC)) is None
    assert w.next_window(datetime(2024, 1, 3, 12, tzinfo=UTC)) is None


def test_a_start_years_ago_costs_nothing() -> None:
    w = _window("Day", start="2000-01-01 00:00", tz="UTC")
    found = w.current_or_next(datetime(2026, 6, 1, 1, tzinfo=UTC))
    assert found is not None and found[0] == datetime(2026, 6, 1, tzinfo=UTC)
