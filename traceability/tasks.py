"""Celery tasks of the cold-chain domain."""

from __future__ import annotations

import smtplib

from celery import shared_task
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.urls import reverse

from traceability.models import RecallNotice

MAIL_RETRIES = 8


@shared_task(autoretry_for=(OSError, smtplib.SMTPException), retry_backoff=True, max_retries=MAIL_RETRIES)
def recall_notice_mail(notice_id: int) -> int:
    """E-mails the members of one notified organisation about the recall; returns the number of messages sent.

    The notice in the application is the record: this mail only makes sure
    people look. One task per organisation, so a refused address delays only
    its own organisation's mail; a retry may send that one twice.
    """
    notice = RecallNotice.objects.select_related("recall__initiated_by", "organisation").get(pk=notice_id)
    recall = notice.recall
    recipients = list(
        User.objects.filter(membership__organisation=notice.organisation, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if not recipients:
        return 0
    batches = ", ".join(
        f"{item.batch.product.name} (GTIN {item.batch.product.gtin}) lot {item.batch.lot}"
        + (f" serials {item.serial_from} to {item.serial_to}" if item.serial_from else "")
        for item in recall.items.select_related("batch__product")
    )
    link = settings.BASE_URL.rstrip("/") + reverse("recall-detail", args=[recall.pk])
    subject = " ".join(f"[ColdTrace] Class {recall.classification} recall {recall.reference}: {batches}".split())
    body = "\n".join(
        [
            f"{notice.organisation.name},",
            "",
            f"{recall.initiated_by.name} has issued a {recall.get_kind_display().lower()} recall "
            f"({recall.get_classification_display()}; depth: {recall.get_depth_display().lower()}).",
            "",
            f"Recalled: {batches}.",
            f"Reason: {recall.reason}",
            f"Instructions: {recall.instructions}",
            "",
            f"Our records place {notice.units_expected} units with you or on their way to you.",
            "Quarantine them, then acknowledge the recall with the number of units you found:",
            link,
        ]
    )
    return send_mail(subject[:200], body, None, recipients)
