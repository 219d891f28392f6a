"""What the consumer page says, in the reader's language: every sentence goes through Django's translation.

Sentences are built here rather than in templates so that each one is a
whole, translatable unit (Chinese word order differs from English) and the
templates stay plain.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.template.defaultfilters import date as date_filter
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext

from traceability.consumer import check, reads, verdict

OK, INFO, WARNING, DANGER = "ok", "info", "warning", "danger"
_LEVELS = (OK, INFO, WARNING, DANGER)


@dataclass(frozen=True)
class Notice:
    """A boxed message: ``level`` is ok, info, warning or danger (the CSS class and its meaning)."""

    level: str
    title: str
    text: str

    @property
    def label(self) -> str:
        """The level in words, so that colour is never the only sign of it."""
        return {
            OK: pgettext("notice level", "OK:"),
            INFO: pgettext("notice level", "Note:"),
            WARNING: pgettext("notice level", "Caution:"),
            DANGER: pgettext("notice level", "Warning:"),
        }[self.level]


@dataclass(frozen=True)
class LegView:
    number: int
    title: str
    lines: tuple[str, ...]
    level: str


def worst(levels: list[str]) -> str:
    return max(levels, key=_LEVELS.index, default=OK)


def advice(level: str) -> Notice:
    """What to do with the pack, from the most serious of the page's notices."""
    if level == DANGER:
        text = _("Read the warnings below and show the pack to your pharmacist.")
        return Notice(DANGER, _("Do not use this pack"), text)
    if level == WARNING:
        return Notice(WARNING, _("Check before use"), _("Read the notes below and ask your pharmacist if unsure."))
    return Notice(OK, _("No problems found"), _("The checks below found nothing wrong with this pack."))


def celsius(value: Decimal | float) -> str:
    """A temperature as people write it: 8, -0.5, 12.4 (no trailing zeros)."""
    number = Decimal(str(round(value, 1))) if isinstance(value, float) else value
    text = f"{number.normalize():f}"
    return "0" if text == "-0" else text


def duration(seconds: int) -> str:
    """A duration at the precision a person needs: minutes under 10 h, hours under 3 days, then days."""
    minutes = seconds // 60
    if minutes < 1:
        return _("less than a minute")
    if minutes < 60:
        return _("%(minutes)d min") % {"minutes": minutes}
    hours, rest = divmod(minutes, 60)
    if hours < 10:
        if rest == 0:
            return _("%(hours)d h") % {"hours": hours}
        return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": rest}
    hours = round(seconds / 3600)
    if hours < 72:
        return _("%(hours)d h") % {"hours": hours}
    days, hours = divmod(hours, 24)
    return _("%(days)d d %(hours)d h") % {"days": days, "hours": hours}


def day(value: datetime.date) -> str:
    """A date in the reader's language, unambiguous everywhere: 31 March 2027, 2027年3月31日."""
    return date_filter(value, pgettext("date format (PHP date codes, as Django's date filter)", "j F Y"))


def _numbers(numbers: tuple[int, ...]) -> str:
    return pgettext("list separator", ", ").join(str(number) for number in numbers)


# The batch and the unit ----------------------------------------------------------


def batch_notices(
    result: check.Check, *, expires_on: datetime.date, expiry_in_code: datetime.date | None
) -> list[Notice]:
    """What the batch's status, expiry and the code's own expiry date mean for the person holding the pack."""
    notices = []
    state = result.batch
    if state is check.BatchState.RECALLED:
        notices.append(
            Notice(
                DANGER,
                _("This batch has been recalled"),
                _("Do not use this medicine. Return it to your pharmacy, which will replace it."),
            )
        )
    elif state is check.BatchState.QUARANTINED:
        notices.append(
            Notice(
                DANGER,
                _("This batch is on hold (quarantined)"),
                _(
                    "Its manufacturer has stopped it from being used while a quality question is checked. "
                    "Do not use this medicine; ask your pharmacist."
                ),
            )
        )
    elif state is check.BatchState.DESTROYED:
        notices.append(
            Notice(
                DANGER,
                _("This batch was recorded as destroyed"),
                _("No pack of it should exist. Do not use this medicine, and show it to your pharmacist."),
            )
        )
    elif state is check.BatchState.NOT_RELEASED:
        notices.append(
            Notice(
                DANGER,
                _("This batch is not released for use"),
                _("Do not use this medicine; ask your pharmacist."),
            )
        )
    if result.expired:
        notices.append(
            Notice(
                DANGER,
                _("This batch has expired"),
                _("It expired on %(date)s. Do not use this medicine; return it to your pharmacy.")
                % {"date": day(expires_on)},
            )
        )
    if result.expiry_in_code_wrong and expiry_in_code is not None:
        notices.append(
            Notice(
                DANGER,
                _("The expiry date in the code is wrong"),
                _(
                    "The code on this pack says %(code)s, but the manufacturer registered this batch with "
                    "%(record)s. The pack may not be genuine; show it to your pharmacist."
                )
                % {"code": day(expiry_in_code), "record": day(expires_on)},
            )
        )
    return notices


def released() -> Notice:
    return Notice(OK, _("Released for use"), _("This batch is not recalled and not on hold."))


def unit_notice(serial: str, result: check.Check, manufacturer: str) -> Notice:
    """Whether the serial number on the pack was issued for this batch, and what has become of that unit."""
    if result.serial is not check.Serial.ISSUED:
        return Notice(
            DANGER,
            _("Possible counterfeit"),
            _(
                "This serial number was never issued for this batch. The pack may be counterfeit: "
                "do not use it, and show it to your pharmacist."
            ),
        )
    if result.unit is check.UnitState.ACTIVE:
        return Notice(
            OK,
            _("Genuine serial number"),
            _("Serial number %(serial)s was issued by %(manufacturer)s for this batch.")
            % {"serial": serial, "manufacturer": manufacturer},
        )
    texts: dict[check.UnitState | None, tuple[str, str, str]] = {
        check.UnitState.DISPENSED: (
            WARNING,
            _("This pack was already dispensed"),
            _(
                "A pharmacy has already handed out the pack with this serial number. If you did not just "
                "receive it from a pharmacy, it may be a copy: ask your pharmacist."
            ),
        ),
        check.UnitState.RECALLED: (
            DANGER,
            _("This pack has been recalled"),
            _("Do not use this medicine. Return it to your pharmacy, which will replace it."),
        ),
        check.UnitState.STOLEN: (
            DANGER,
            _("This pack is reported stolen"),
            _("Do not use this medicine, and show it to your pharmacist."),
        ),
        check.UnitState.DESTROYED: (
            DANGER,
            _("This pack was recorded as destroyed"),
            _("It should not exist. Do not use this medicine, and show it to your pharmacist."),
        ),
    }
    level, title, text = texts.get(
        result.unit,
        (
            DANGER,
            _("This pack is out of circulation"),
            _("It has been taken off the market. Do not use this medicine; ask your pharmacist."),
        ),
    )
    return Notice(level, title, text)


@dataclass(frozen=True)
class RecallView:
    """The public facts of the recall behind a recalled batch or pack, as the banner shows them."""

    title: str
    issued: str
    classification: str
    instructions: str


def recall_view(recall: reads.RecallFacts) -> RecallView:
    classes = {
        "I": _("Class I: the most serious; using the medicine may cause serious harm"),
        "II": _("Class II: using the medicine may cause temporary or reversible harm"),
        "III": _("Class III: using the medicine is unlikely to cause harm"),
    }
    return RecallView(
        title=_("Recall %(reference)s") % {"reference": recall.reference},
        issued=day(timezone.localdate(recall.issued_at)),
        classification=classes.get(recall.classification, recall.classification),
        instructions=recall.instructions,
    )


# The cold chain ------------------------------------------------------------------


def _range(low: Decimal, high: Decimal) -> dict[str, str]:
    return {"low": celsius(low), "high": celsius(high)}


def cold_chain_summary(result: verdict.Verdict) -> Notice:
    """One plain sentence on the whole cold chain, and how sure it is."""
    count = len(result.legs)
    if result.outcome is verdict.Outcome.NOT_SHIPPED:
        return Notice(
            INFO,
            _("Not shipped yet"),
            _("No shipment of this batch has left the manufacturer yet, so there is no cold-chain record to show."),
        )
    if result.outcome is verdict.Outcome.BROKEN:
        legs = result.failed_legs
        title = ngettext(
            "Temperature problem on leg %(legs)s of %(count)d",
            "Temperature problems on legs %(legs)s of %(count)d",
            len(legs),
        ) % {"legs": _numbers(legs), "count": count}
        text = _("The temperature went outside the required range. See each leg below.")
        return Notice(DANGER, title, text)
    if result.outcome is verdict.Outcome.INCOMPLETE:
        legs = result.incomplete_legs
        title = ngettext(
            "The temperature record of leg %(legs)s has gaps",
            "The temperature records of legs %(legs)s have gaps",
            len(legs),
        ) % {"legs": _numbers(legs)}
        text = _("No temperature problem was recorded, but for some of the time no temperature was recorded at all.")
        return Notice(WARNING, title, text)
    facts = {"count": count, "duration": duration(result.total_seconds)}
    if result.common_range is not None:
        title = ngettext(
            "Kept between %(low)s and %(high)s °C for %(count)d leg, %(duration)s",
            "Kept between %(low)s and %(high)s °C for all %(count)d legs, %(duration)s",
            count,
        ) % (facts | _range(*result.common_range))
    else:
        title = (
            ngettext(
                "Kept in its required temperature range for %(count)d leg, %(duration)s",
                "Kept in its required temperature range for all %(count)d legs, %(duration)s",
                count,
            )
            % facts
        )
    if result.in_transit:
        text = ngettext(
            "%(count)d leg is still in transit: this is the record so far.",
            "%(count)d legs are still in transit: this is the record so far.",
            result.in_transit,
        ) % {"count": result.in_transit}
    else:
        text = _("Every leg has arrived.")
    return Notice(OK, title, text)


def _state(state: verdict.LegState) -> str:
    return {
        verdict.LegState.IN_TRANSIT: _("in transit"),
        verdict.LegState.DELIVERED: _("delivered"),
        verdict.LegState.REJECTED: _("delivery refused"),
    }[state]


def _excursion(leg: verdict.Leg, excursion: verdict.ExcursionFact) -> str:
    facts = {"duration": duration(excursion.duration_seconds), "peak": celsius(excursion.peak_celsius)}
    if excursion.direction is verdict.Direction.ABOVE:
        facts["limit"] = celsius(leg.max_celsius)
        if excursion.ongoing:
            return _("Too warm now: %(limit)s °C or more for %(duration)s so far, up to %(peak)s °C.") % facts
        return _("Too warm: %(limit)s °C or more for %(duration)s, up to %(peak)s °C.") % facts
    facts["limit"] = celsius(leg.min_celsius)
    if excursion.ongoing:
        return _("Too cold now: %(limit)s °C or less for %(duration)s so far, down to %(peak)s °C.") % facts
    return _("Too cold: %(limit)s °C or less for %(duration)s, down to %(peak)s °C.") % facts


def leg_view(leg: verdict.Leg) -> LegView:
    lines = [_excursion(leg, excursion) for excursion in leg.excursions]
    if verdict.Limit.MKT in leg.limits_exceeded:
        lines.append(
            _("Its mean kinetic temperature (the average that matters for stability) went above %(high)s °C.")
            % {"high": celsius(leg.max_celsius)}
        )
    if verdict.Limit.FREEZE_THAW in leg.limits_exceeded:
        lines.append(_("It froze and thawed again."))
    if leg.data_gaps:
        lines.append(_("For part of this leg the temperature logger recorded nothing."))
    facts = _range(leg.min_celsius, leg.max_celsius) | {"duration": duration(leg.seconds)}
    if leg.held and leg.state is verdict.LegState.IN_TRANSIT:
        lines.append(_("Kept between %(low)s and %(high)s °C so far, %(duration)s.") % facts)
    elif leg.held:
        lines.append(_("Kept between %(low)s and %(high)s °C, %(duration)s.") % facts)
    elif leg.state is verdict.LegState.IN_TRANSIT:
        lines.append(_("In transit for %(duration)s so far.") % facts)
    else:
        lines.append(_("Duration: %(duration)s.") % facts)
    level = DANGER if leg.failed else WARNING if leg.data_gaps else OK
    title = _("Leg %(number)d: %(state)s") % {"number": leg.number, "state": _state(leg.state)}
    return LegView(leg.number, title, tuple(lines), level)
