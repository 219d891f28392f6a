"""Loggers, the inbox of raw messages, and readings.

The inbox keeps the exact bytes of every message before it is acknowledged;
processing turns an inbox row into readings (accepted), or records why not.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import F, Max, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from iot_ingest import protocol
from traceability.models import Organisation, Shipment

DEVICE_ID_REGEX = r"\A[A-Za-z0-9._-]{1,64}\Z"


class DeviceStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    DISABLED = "disabled", _("Disabled")


class Device(models.Model):
    device_id = models.CharField(max_length=64, unique=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="devices")
    public_key = models.BinaryField(max_length=32, help_text=_("Ed25519 public key"))
    status = models.CharField(max_length=10, choices=DeviceStatus.choices, default=DeviceStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    Status = DeviceStatus

    class Meta:
        ordering = ["device_id"]
        constraints = [
            models.CheckConstraint(condition=Q(device_id__regex=DEVICE_ID_REGEX), name="device_id_format"),
            models.CheckConstraint(condition=Q(status__in=[s.value for s in DeviceStatus]), name="device_status_valid"),
        ]

    def __str__(self) -> str:
        return self.device_id


class DeviceAssignment(models.Model):
    """A logger rides with a shipment from ``starts_at`` until ``ends_at`` (open while it travels)."""

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="assignments")
    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="device_assignments")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")), name="assignment_ends_after_start"
            ),
            models.UniqueConstraint(
                fields=["device"], condition=Q(ends_at__isnull=True), name="assignment_one_open_per_device"
            ),
        ]
        indexes = [models.Index(fields=["device", "starts_at"])]

    def __str__(self) -> str:
        return f"{self.device_id} on {self.shipment_id} from {self.starts_at:%Y-%m-%d %H:%M}"


class Transport(models.TextChoices):
    MQTT = "mqtt", "MQTT"
    HTTP = "http", "HTTPS"


class Outcome(models.TextChoices):
    PENDING = "pending", _("Pending")
    ACCEPTED = "accepted", _("Accepted")
    DUPLICATE = "duplicate", _("Duplicate")
    REJECTED = "rejected", _("Rejected")
    DEAD = "dead", _("Failed repeatedly (dead letter)")


class InboxMessage(models.Model):
    """One message exactly as received. Written, and committed, before the sender gets its acknowledgement."""

    transport = models.CharField(max_length=4, choices=Transport.choices)
    topic = models.CharField(max_length=256, blank=True)
    raw = models.BinaryField()
    received_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    reason = models.CharField(max_length=24, blank=True, choices=[(r, r) for r in protocol.REASONS])
    detail = models.TextField(blank=True, help_text=_("why it was rejected, or the last processing error"))
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Set by processing, in the same transaction that read the device: no database constraint, whose check at
    # commit costs a lookup per message, nor an index of its own (inbox_device_seq starts with it). Django's
    # PROTECT still applies, and nothing deletes devices.
    device = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        db_constraint=False,
        db_index=False,
    )
    seq = models.BigIntegerField(null=True, blank=True)
    urgent = models.BooleanField(
        default=False,
        help_text=_("at a glance, a temperature its shipment's contract does not call calm: processed first"),
    )

    Outcome = Outcome

    class Meta:
        ordering = ["id"]
        constraints = [
            # Exactly-once: a (device, seq) is accepted once; redeliveries become duplicates.
            models.UniqueConstraint(
                fields=["device", "seq"], condition=Q(outcome="accepted"), name="inbox_accepted_once"
            ),
            models.CheckConstraint(
                condition=Q(outcome="rejected", reason__gt="") | (~Q(outcome="rejected") & Q(reason="")),
                name="inbox_reason_iff_rejected",
            ),
        ]
        indexes = [
            models.Index(fields=["outcome", "received_at"], name="inbox_backlog"),
            models.Index(fields=["device", "seq"], name="inbox_device_seq"),
            # The urgent messages waiting (iot_ingest.triage): a few rows, whatever the backlog.
            models.Index(fields=["received_at"], condition=Q(outcome="pending", urgent=True), name="inbox_urgent"),
            # A logger's messages still waiting (MQTT names the logger in the topic), taken with its urgent one.
            models.Index(fields=["topic", "received_at"], condition=Q(outcome="pending"), name="inbox_pending_topic"),
        ]

    def __str__(self) -> str:
        return f"inbox {self.pk} ({self.outcome})"


class ReadingCommit(models.Model):
    """A batch of a shipment's readings whose Merkle root went into a ``readings.committed`` ledger entry.

    Its readings are the shipment's with an id above ``after_id`` and up to
    ``through_id``, in id order: no reading is written again to say which
    commit it belongs to. Commits made before these bounds existed have none,
    and each of their readings names it (``Reading.commit``).
    """

    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="reading_commits")
    count = models.PositiveIntegerField()
    root = models.BinaryField(max_length=32)
    committed_at = models.DateTimeField(default=timezone.now)
    after_id = models.BigIntegerField(null=True, blank=True, help_text=_("the shipment's readings above this id"))
    through_id = models.BigIntegerField(null=True, blank=True, help_text=_("... up to this one"))

    class Meta:
        ordering = ["committed_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(after_id__isnull=True, through_id__isnull=True) | Q(after_id__lt=F("through_id")),
                name="reading_commit_range",
            ),
        ]
        indexes = [models.Index(fields=["shipment", "through_id"], name="reading_commit_through")]

    def __str__(self) -> str:
        return f"{self.count} readings of shipment {self.shipment_id}"

    @staticmethod
    def covered_through(shipment: Any) -> Coalesce:
        """The greatest reading id the shipment's commits cover (0: none has a range), as an expression:
        ``shipment`` is its pk, or an ``OuterRef`` to it in a query of shipments."""
        ranges = ReadingCommit.objects.filter(shipment=shipment).order_by().values("shipment")
        return Coalesce(Subquery(ranges.annotate(through=Max("through_id")).values("through")), 0)


class Reading(models.Model):
    class Kind(models.TextChoices):
        TEMPERATURE = "temperature", _("Temperature (°C)")
        HUMIDITY = "humidity", _("Relative humidity (%)")

    # The three keys every reading is stored with carry no database constraint: processing writes them
    # in the same transaction that read the device and its assignments and locked the message, and a
    # constraint costs a lookup per key per reading at commit, a third of PostgreSQL's time under load.
    # Django still protects them (PROTECT); nothing deletes devices, shipments or inbox messages. Nor do
    # shipment and message have an index of their own: those below start with them. Every index costs
    # each insert about a microsecond: device has none (readings are found by shipment). ``commit`` is
    # set only on readings committed before commits had id bounds (ReadingCommit); its index holds them
    # alone, and reading_shipment_id every other reading, in the order commits take them.
    id = models.BigAutoField(primary_key=True)
    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="readings", db_constraint=False, db_index=False
    )
    shipment = models.ForeignKey(
        Shipment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="readings",
        db_constraint=False,
        db_index=False,
    )
    message = models.ForeignKey(
        InboxMessage, on_delete=models.PROTECT, related_name="readings", db_constraint=False, db_index=False
    )
    index = models.PositiveIntegerField(help_text=_("position of the record in its message"))
    kind = models.CharField(max_length=12, choices=Kind.choices)
    value = models.FloatField()
    measured_at = models.DateTimeField(help_text=_("device time"))
    received_at = models.DateTimeField(help_text=_("server time"))
    commit = models.ForeignKey(
        ReadingCommit, on_delete=models.PROTECT, null=True, blank=True, related_name="readings", db_index=False
    )

    class Meta:
        ordering = ["measured_at", "id"]
        constraints = [models.UniqueConstraint(fields=["message", "index"], name="reading_once_per_record")]
        indexes = [
            models.Index(fields=["shipment", "kind", "measured_at"], name="reading_shipment_time"),
            models.Index(fields=["shipment", "id"], condition=Q(commit__isnull=True), name="reading_shipment_id"),
            models.Index(fields=["commit"], condition=Q(commit__isnull=False), name="reading_committed"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.kind} {self.value} at {self.measured_at:%Y-%m-%d %H:%M:%S}"

    @staticmethod
    def uncommitted(shipment: Any, after: Any) -> models.QuerySet[Reading]:
        """The shipment's readings that no commit covers: above ``after`` (``ReadingCommit.covered_through``),
        and not among those committed one by one before commits had ranges (the reading_shipment_id index)."""
        return Reading.objects.filter(shipment=shipment, commit__isnull=True, id__gt=after)
