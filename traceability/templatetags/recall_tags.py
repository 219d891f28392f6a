"""``{% waiting_recall_notices %}``: how many recall notices the signed-in user's organisation has not acknowledged."""

from __future__ import annotations

from typing import Any

from django import template

from traceability.selectors import waiting_notices

register = template.Library()


@register.simple_tag(takes_context=True)
def waiting_recall_notices(context: dict[str, Any]) -> int:
    membership = getattr(context["request"].user, "membership", None)
    return waiting_notices(membership.organisation).count() if membership else 0
