"""Maintenance windows (Microsoft.Maintenance ``maintenanceWindow``): parsing, validation and occurrences.

A window is ``startDateTime`` ("yyyy-MM-dd HH:mm", wall clock in ``timeZone``), ``duration`` ("HH:mm"),
``recurEvery`` and an optional ``expirationDateTime``. ``timeZone`` is a Windows time zone name as Azure
takes it ("Pacific Standard Time", "W. Europe Standard Time", "UTC"; mapped to IANA with tzlocal's CLDR
table) or an IANA name ("Europe/Berlin"). Occurrences come from dateutil's rrule on the zone's wall clock
and are placed on the time line with zoneinfo, so a window at 22:00 stays at 22:00 local across a
daylight-saving change. ``recurEvery`` forms, as Azure documents them:

- daily: ``Day``, ``3Days``
- weekly: ``Week``, ``3Weeks``, ``Week Saturday,Sunday``, ``2Weeks Monday``
- monthly: ``Month``, ``2Months``, ``Month day23,day24`` (``day-1`` is the month's last day),
  ``Month Last Sunday``, ``Month Fourth Monday``, ``Month Last Sunday Offset-3``,
  ``Month Third Sunday Offset6`` (offset in days, -6..6)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule
from dateutil.relativedelta import relativedelta
from tzlocal.windows_tz import win_tz

_DATETIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2})$")
_DURATION_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_WEEKDAYS = {
    "monday": rrule.MO,
    "tuesday": rrule.TU,
    "wednesday": rrule.WE,
    "thursday": rrule.TH,
    "friday": rrule.FR,
    "saturday": rrule.SA,
    "sunday": rrule.SU,
}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_WIN_TZ_LOWER = {k.lower(): v for k, v in win_tz.items()}
_MAX_INTERVAL = 1000
DEFAULT_DURATION = "01:30"
MIN_DURATION = timedelta(hours=1, minutes=30)  # Azure's minimum for scope Extension
MAX_DURATION = timedelta(hours=24)  # whole hours up to a day: a window longer than that is never closed


class WindowError(ValueError):
    def __init__(self, message: str, target: str) -> None:
        super().__init__(message)
        self.target = target


def time_zone(name: str) -> ZoneInfo:
    """A Windows (as Azure takes them) or IANA time zone name as a ZoneInfo."""
    iana = _WIN_TZ_LOWER.get(name.strip().lower(), name.strip())
    try:
        if not iana or iana.startswith(("/", ".")) or ".." in iana:
            raise ValueError(iana)
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            f"timeZone '{name}' is not a time zone: use a Windows time zone name as Azure does "
            "(e.g. 'Pacific Standard Time', 'W. Europe Standard Time', 'UTC') or an IANA name (e.g. 'Europe/Berlin').",
            "maintenanceWindow.timeZone",
        ) from None


def parse_local(value: str, field: str) -> datetime:
    m = _DATETIME_RE.match(value.strip())
    if not m:
        raise WindowError(f"{field} '{value}' is not in the format 'yyyy-MM-dd HH:mm'.", f"maintenanceWindow.{field}")
    try:
        y, mo, d, h, mi = (int(g) for g in m.groups())
        return datetime(y, mo, d, h, mi)
    except ValueError:
        raise WindowError(f"{field} '{value}' is not a valid date and time.", f"maintenanceWindow.{field}") from None


def parse_duration(value: str) -> timedelta:
    m = _DURATION_RE.match(value.strip())
    if not m or int(m.group(2)) >= 60:
        raise WindowError(f"duration '{value}' is not in the format 'HH:mm'.", "maintenanceWindow.duration")
    d = timedelta(hours=int(m.group(1)), minutes=int(m.group(2)))
    if d < MIN_DURATION or d > MAX_DURATION:
        raise WindowError(
            f"duration '{value}' must be between 01:30 and 24:00 for maintenanceScope Extension.",
            "maintenanceWindow.duration",
        )
    return d


@dataclass(frozen=True)
class Recurrence:
    freq: int
    interval: int
    byweekday: tuple[rrule.weekday, ...] | None = None
    bymonthday: tuple[int, ...] | None = None
    offset_days: int = 0


def _interval(text: str) -> int:
    n = int(text) if text else 1
    if not 1 <= n <= _MAX_INTERVAL:
        raise ValueError
    return n


def parse_recur_every(value: str) -> Recurrence:  # noqa: C901 - one branch per documented form
    bad = WindowError(
        f"recurEvery '{value}' is not a recurrence Azure documents: daily 'Day' or '3Days'; weekly 'Week', "
        "'2Weeks', 'Week Saturday,Sunday'; monthly 'Month', '2Months', 'Month day23,day24', "
        "'Month Last Sunday', 'Month Fourth Monday', 'Month Last Sunday Offset-3'.",
        "maintenanceWindow.recurEvery",
    )
    parts = value.strip().split()
    if not parts or len(parts) > 4:
        raise bad
    m = re.match(r"^(\d*)(day|days|week|weeks|month|months)$", parts[0], re.IGNORECASE)
    if not m:
        raise bad
    try:
        interval = _interval(m.group(1))
    except ValueError:
        raise bad from None
    unit = m.group(2).lower().rstrip("s")
    rest = parts[1:]
    if unit == "day":
        if rest:
            raise bad
        return Recurrence(rrule.DAILY, interval)
    if unit == "week":
        if not rest:
            return Recurrence(rrule.WEEKLY, interval)
        if len(rest) != 1:
            raise bad
        names = [n.strip().lower() for n in rest[0].split(",")]
        if not names or any(n not in _WEEKDAYS for n in names):
            raise bad
        return Recurrence(rrule.WEEKLY, interval, byweekday=tuple(_WEEKDAYS[n] for n in dict.fromkeys(names)))
    if not rest:
        return Recurrence(rrule.MONTHLY, interval)
    if len(rest) == 1:
        days = []
        for item in rest[0].split(","):
            dm = re.match(r"^day(-?\d{1,2})$", item.strip(), re.IGNORECASE)
            if not dm or not (1 <= int(dm.group(1)) <= 31 or int(dm.group(1)) == -1):
                raise bad
            days.append(int(dm.group(1)))
        return Recurrence(rrule.MONTHLY, interval, bymonthday=tuple(dict.fromkeys(days)))
    ordinal, weekday = rest[0].lower(), rest[1].lower()
    if ordinal not in _ORDINALS or weekday not in _WEEKDAYS:
        raise bad
    offset = 0
    if len(rest) == 3:
        om = re.match(r"^offset(-?\d)$", rest[2], re.IGNORECASE)
        if not om or not -6 <= int(om.group(1)) <= 6:
            raise bad
        offset = int(om.group(1))
    return Recurrence(rrule.MONTHLY, interval, byweekday=(_WEEKDAYS[weekday](_ORDINALS[ordinal]),), offset_days=offset)


@dataclass(frozen=True)
class Window:
    """A validated maintenance window; times are compared in UTC."""

    tz: ZoneInfo
    start: datetime  # naive, wall clock in tz
    duration: timedelta
    recurrence: Recurrence
    expiration: datetime | None  # naive, wall clock in tz

    @classmethod
    def parse(cls, window: dict[str, object]) -> Window:
        def text(field: str, required: bool) -> str | None:
            value = window.get(field)
            if value is None or value == "":
                if required:
                    raise WindowError(f"maintenanceWindow.{field} is required.", f"maintenanceWindow.{field}")
                return None
            if not isinstance(value, str):
                raise WindowError(f"maintenanceWindow.{field} must be a string.", f"maintenanceWindow.{field}")
            return value

        tz = time_zone(text("timeZone", True) or "")
        start = parse_local(text("startDateTime", True) or "", "startDateTime")
        duration = parse_duration(text("duration", False) or DEFAULT_DURATION)
        recurrence = parse_recur_every(text("recurEvery", True) or "")
        expiration_text = text("expirationDateTime", False)
        expiration = parse_local(expiration_text, "expirationDateTime") if expiration_text else None
        if expiration is not None and expiration <= start:
            raise WindowError(
                "expirationDateTime must be later than startDateTime.", "maintenanceWindow.expirationDateTime"
            )
        return cls(tz, start, duration, recurrence, expiration)

    def _rule(self, near: datetime) -> rrule.rrule:
        """The recurrence, its start moved forward by whole periods (a multiple of the interval, so the
        phase is kept) to at most ``near``: rrule walks from its start, and a window set up years ago must
        not cost years of occurrences on every question."""
        r = self.recurrence
        start = self.start
        if near > start:
            if r.freq == rrule.DAILY:
                periods = (near - start).days // r.interval
                start += timedelta(days=periods * r.interval)
            elif r.freq == rrule.WEEKLY:
                periods = (near - start).days // (7 * r.interval)
                start += timedelta(weeks=periods * r.interval)
            else:
                months = (near.year - start.year) * 12 + near.month - start.month - 1
                periods = max(months, 0) // r.interval
                start += relativedelta(months=periods * r.interval)
        kwargs: dict[str, object] = {}
        if r.byweekday is not None:
            kwargs["byweekday"] = r.byweekday
        if r.bymonthday is not None:
            kwargs["bymonthday"] = r.bymonthday
        if r.freq == rrule.MONTHLY and r.byweekday is None and r.bymonthday is None:
            kwargs["bymonthday"] = (self.start.day,)
        until = self.expiration - timedelta(days=r.offset_days) if self.expiration else None
        return rrule.rrule(r.freq, dtstart=start, interval=r.interval, until=until, **kwargs)  # type: ignore[arg-type]

    def _placed(self, local: datetime) -> datetime:
        """A wall-clock time in the window's zone, on the time line (a time skipped by a daylight-saving
        change moves forward by the gap, as clocks do)."""
        aware = local.replace(tzinfo=self.tz)
        return aware.astimezone(UTC).astimezone(self.tz)

    def current_or_next(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The window open at ``now`` or the next one to open (start, end), aware in the window's zone;
        None once the configuration has expired."""
        local_now = now.astimezone(self.tz).replace(tzinfo=None)
        lower = local_now - self.duration - timedelta(days=abs(self.recurrence.offset_days) + 2)
        offset = timedelta(days=self.recurrence.offset_days)
        for base in self._rule(lower).xafter(max(lower, self.start), inc=True):
            local_start = base + offset
            if self.expiration is not None and local_start >= self.expiration:
                return None
            if local_start < self.start:
                continue  # an offset before the configuration starts
            start = self._placed(local_start)
            end = (start.astimezone(UTC) + self.duration).astimezone(self.tz)
            if end > now:
                return start, end
        return None

    def next_window(self, now: datetime) -> tuple[datetime, datetime] | None:
        """:meth:`current_or_next`, None too when the dates run off the calendar (year 9999)."""
        try:
            return self.current_or_next(now)
        except (OverflowError, ValueError):
            return None

    def is_open(self, now: datetime) -> bool:
        found = self.next_window(now)
        return bool(found and found[0] <= now)
