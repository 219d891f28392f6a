"""The cold-chain domain: who, what, and where it went.

Invariants live in database constraints first; rules that span rows live in
``services.py``. Rows here change only through those services.
"""

from __future__ import annotations

import datetime
import hashlib

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from traceability import coldchain, gs1

# \A and \Z mean the same in Python (SQLite) and PostgreSQL; $ would let a final newline through.
GLN_REGEX = r"\A[0-9]{13}\Z"
GTIN14_REGEX = r"\A[0-9]{14}\Z"
# GS1 AI encodable character set 82, 1 to 20 characters (lots, serials).
CSET82_REGEX = r"\A[-!\"%&'()*+,./0-9:;<=>?A-Z_a-z]{1,20}\Z"


class OrganisationKind(models.TextChoices):
    MANUFACTURER = "manufacturer", _("Manufacturer")
    LOGISTICS = "logistics", _("Logistics provider")
    WHOLESALER = "wholesaler", _("Wholesaler")
    DISPENSER = "dispenser", _("Dispenser / pharmacy")
    REGULATOR = "regulator", _("Regulator")


class Organisation(models.Model):
    Kind = OrganisationKind

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    gln = models.CharField("GLN", max_length=13, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(gln__regex=GLN_REGEX), name="organisation_gln_13_digits"),
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in OrganisationKind]), name="organisation_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_regulator(self) -> bool:
        return self.kind == self.Kind.REGULATOR


class Site(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=200)
    gln = models.CharField("GLN", max_length=13, unique=True)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, help_text=_("ISO 3166-1 alpha-2"))

    class Meta:
        ordering = ["organisation__name", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(gln__regex=GLN_REGEX), name="site_gln_13_digits"),
            models.CheckConstraint(condition=Q(country__regex=r"\A[A-Z]{2}\Z"), name="site_country_iso"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.organisation.name})"


class MembershipRole(models.TextChoices):
    ADMIN = "admin", _("Administrator")
    OPERATOR = "operator", _("Operator")
    VIEWER = "viewer", _("Viewer")


class Membership(models.Model):
    """A user works for exactly one organisation, in one role."""

    Role = MembershipRole

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.OPERATOR)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=[r.value for r in MembershipRole]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organisation} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in (self.Role.ADMIN, self.Role.OPERATOR)


class Product(models.Model):
    gtin = models.CharField("GTIN", max_length=14, unique=True, help_text=_("GTIN-14"))
    name = models.CharField(max_length=200)
    dosage_form = models.CharField(max_length=100)
    strength = models.CharField(max_length=100, blank=True)
    manufacturer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="products")
    storage_profile = models.CharField(max_length=20, choices=coldchain.StorageProfile.choices())
    freeze_sensitive = models.BooleanField(default=False)
    # Cumulative minutes above the storage range the stability data allows.
    stability_budget_minutes = models.PositiveIntegerField(default=240)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(gtin__regex=GTIN14_REGEX), name="product_gtin_14_digits"),
            models.CheckConstraint(
                condition=Q(storage_profile__in=[p.value for p in coldchain.StorageProfile]),
                name="product_storage_profile_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.strength} ({self.gtin})".replace("  ", " ")


class BatchStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    QUARANTINED = "quarantined", _("Quarantined")
    RECALLED = "recalled", _("Recalled")
    EXPIRED = "expired", _("Expired")
    DESTROYED = "destroyed", _("Destroyed")


class Batch(models.Model):
    Status = BatchStatus

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="batches")
    lot = models.CharField(max_length=20)
    manufactured_on = models.DateField()
    expires_on = models.DateField()
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(fields=["product", "lot"], name="batch_lot_unique_per_product"),
            models.CheckConstraint(condition=Q(lot__regex=CSET82_REGEX), name="batch_lot_cset82"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="batch_quantity_positive"),
            models.CheckConstraint(
                condition=Q(expires_on__gt=F("manufactured_on")), name="batch_expiry_after_manufacture"
            ),
            models.CheckConstraint(condition=Q(status__in=[s.value for s in BatchStatus]), name="batch_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.product.gtin} lot {self.lot}"

    @property
    def gtin(self) -> str:
        return self.product.gtin

    def is_expired(self, today: datetime.date | None = None) -> bool:
        return self.expires_on < (today or timezone.localdate())

    def digital_link(self, serial: str | None = None) -> str:
        return gs1.build_digital_link(
            settings.BASE_URL, gtin=self.product.gtin, lot=self.lot, serial=serial, expiry=self.expires_on
        )


class SerialStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    DISPENSED = "dispensed", _("Dispensed")
    DECOMMISSIONED = "decommissioned", _("Decommissioned")
    RECALLED = "recalled", _("Recalled")
    STOLEN = "stolen", _("Stolen")
    DESTROYED = "destroyed", _("Destroyed")


class SerialNumber(models.Model):
    """One saleable unit. Serials are unique per GTIN (DSCSA, EU FMD)."""

    Status = SerialStatus

    # Denormalised from the batch so the database can enforce uniqueness per GTIN.
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="serials")
    serial = models.CharField(max_length=20)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)

    class Meta:
        ordering = ["serial"]
        constraints = [
            models.UniqueConstraint(fields=["product", "serial"], name="serial_unique_per_gtin"),
            models.CheckConstraint(condition=Q(serial__regex=CSET82_REGEX), name="serial_cset82"),
            models.CheckConstraint(condition=Q(status__in=[s.value for s in SerialStatus]), name="serial_status_valid"),
        ]
        indexes = [models.Index(fields=["batch", "serial"])]

    def __str__(self) -> str:
        return self.serial


class ShipmentStatus(models.TextChoices):
    PLANNED = "planned", _("Planned")
    IN_TRANSIT = "in_transit", _("In transit")
    DELIVERED = "delivered", _("Delivered")
    REJECTED = "rejected", _("Rejected")


class Shipment(models.Model):
    Status = ShipmentStatus

    reference = models.CharField(max_length=32, unique=True)
    shipper = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="shipments_sent")
    carrier = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="shipments_carried")
    consignee = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="shipments_received")
    # Who physically holds the goods now; changes with every custody event.
    custodian = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="shipments_held")
    origin = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="shipments_out")
    destination = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="shipments_in")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNED)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    # The digest of the excursions and triggers last applied (coldchain.Evaluation.verdict): an evaluation
    # that finds the same ones has nothing to apply.
    verdict = models.BinaryField(max_length=32, default=b"", editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in ShipmentStatus]), name="shipment_status_valid"
            ),
            models.CheckConstraint(condition=~Q(origin=F("destination")), name="shipment_origin_not_destination"),
            models.CheckConstraint(
                condition=Q(status="planned", dispatched_at__isnull=True)
                | Q(~Q(status="planned"), dispatched_at__isnull=False),
                name="shipment_dispatched_at_iff_dispatched",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["delivered", "rejected"], closed_at__isnull=False)
                | Q(~Q(status__in=["delivered", "rejected"]), closed_at__isnull=True),
                name="shipment_closed_at_iff_closed",
            ),
            models.CheckConstraint(
                condition=Q(status="rejected", rejection_reason__gt="") | Q(~Q(status="rejected"), rejection_reason=""),
                name="shipment_rejection_reason_iff_rejected",
            ),
        ]

    def __str__(self) -> str:
        return self.reference


class ShipmentItem(models.Model):
    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="items")
    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="shipment_items")
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["shipment", "batch"], name="shipment_item_batch_once"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="shipment_item_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x batch {self.batch_id}"


class TemperatureContract(models.Model):
    """The conditions a shipment must keep; defaulted from its products."""

    shipment = models.OneToOneField(Shipment, on_delete=models.PROTECT, related_name="contract")
    storage_profile = models.CharField(max_length=20, choices=coldchain.StorageProfile.choices())
    min_celsius = models.DecimalField(max_digits=5, decimal_places=2)
    max_celsius = models.DecimalField(max_digits=5, decimal_places=2)
    arming_seconds = models.PositiveIntegerField()
    mkt_limit_celsius = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    mkt_window_seconds = models.PositiveIntegerField(null=True, blank=True)
    freeze_thaw_limit = models.PositiveIntegerField(null=True, blank=True)
    logging_interval_seconds = models.PositiveIntegerField()
    max_gap_seconds = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(min_celsius__lt=F("max_celsius")), name="contract_range_ordered"),
            models.CheckConstraint(
                condition=Q(max_gap_seconds__gte=F("logging_interval_seconds")), name="contract_gap_covers_interval"
            ),
            models.CheckConstraint(
                condition=Q(mkt_limit_celsius__isnull=True, mkt_window_seconds__isnull=True)
                | Q(mkt_limit_celsius__isnull=False, mkt_window_seconds__isnull=False, mkt_window_seconds__gt=0),
                name="contract_mkt_limit_with_window",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.shipment.reference}: {self.min_celsius}..{self.max_celsius} °C"

    def as_rules(self) -> coldchain.Contract:
        """The pure-rules view of this contract, for evaluation and reports."""
        return coldchain.Contract(
            min_celsius=float(self.min_celsius),
            max_celsius=float(self.max_celsius),
            arming_seconds=self.arming_seconds,
            mkt_limit_celsius=None if self.mkt_limit_celsius is None else float(self.mkt_limit_celsius),
            mkt_window_seconds=self.mkt_window_seconds,
            freeze_thaw_limit=self.freeze_thaw_limit,
            logging_interval_seconds=self.logging_interval_seconds,
            max_gap_seconds=self.max_gap_seconds,
            rules=tuple(rule.as_rule() for rule in self.rules.all()),
        )


class ContractRule(models.Model):
    """One rule of the single shape of DESIGN.md: band, threshold, duration, mode, severity."""

    contract = models.ForeignKey(TemperatureContract, on_delete=models.PROTECT, related_name="rules")
    name = models.CharField(max_length=100)
    band = models.CharField(max_length=10, choices=coldchain.Band.choices())
    threshold_celsius = models.DecimalField(max_digits=5, decimal_places=2)
    duration_seconds = models.PositiveIntegerField()
    mode = models.CharField(max_length=12, choices=coldchain.Mode.choices())
    severity = models.CharField(max_length=10, choices=coldchain.Severity.choices())

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(band__in=[b.value for b in coldchain.Band]), name="rule_band_valid"),
            models.CheckConstraint(condition=Q(mode__in=[m.value for m in coldchain.Mode]), name="rule_mode_valid"),
            models.CheckConstraint(
                condition=Q(severity__in=[s.value for s in coldchain.Severity]), name="rule_severity_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def as_rule(self) -> coldchain.Rule:
        return coldchain.Rule(
            name=self.name,
            band=coldchain.Band(self.band),
            threshold_celsius=float(self.threshold_celsius),
            duration_seconds=self.duration_seconds,
            mode=coldchain.Mode(self.mode),
            severity=coldchain.Severity(self.severity),
        )


class CustodyKind(models.TextChoices):
    DISPATCH = "dispatch", _("Dispatch")
    HANDOVER = "handover", _("Hand-over")
    RECEIPT = "receipt", _("Receipt")


class CustodyEvent(models.Model):
    """Who handed the goods to whom, when and where."""

    Kind = CustodyKind

    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="custody_events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    from_organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    to_organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    location = models.CharField(max_length=200, blank=True, help_text=_("Where, when not at a known site"))
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["occurred_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=[k.value for k in CustodyKind]), name="custody_kind_valid"),
            models.CheckConstraint(
                condition=~Q(kind="handover") | ~Q(from_organisation=F("to_organisation")),
                name="custody_handover_changes_hands",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.from_organisation_id}->{self.to_organisation_id} at {self.occurred_at:%Y-%m-%d %H:%M}"
        )


class ExcursionDirection(models.TextChoices):
    ABOVE = "above", _("Above range")
    BELOW = "below", _("Below range")


class Excursion(models.Model):
    """A period outside the contract's range that fired at least one rule (device time)."""

    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="excursions")
    direction = models.CharField(max_length=5, choices=ExcursionDirection.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    peak_celsius = models.FloatField()
    duration_seconds = models.PositiveIntegerField()
    rules = models.JSONField(default=list, help_text=_("the rules it fired"))
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)
    end_recorded = models.BooleanField(default=False, help_text=_("its end is in the ledger"))

    Direction = ExcursionDirection

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["shipment", "started_at"], name="excursion_once_per_start"),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=F("started_at")), name="excursion_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.direction} from {self.started_at:%Y-%m-%d %H:%M}"


class AlertSeverity(models.TextChoices):
    INFO = "info", _("Info")
    WARNING = "warning", _("Warning")
    ALARM = "alarm", _("Alarm")
    CRITICAL = "critical", _("Critical")


class AlertStatus(models.TextChoices):
    OPEN = "open", _("Open")
    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    RESOLVED = "resolved", _("Resolved")


class Alert(models.Model):
    """A contract rule (or the MKT, freeze-thaw or data-gap limit) fired for a shipment.

    One open alert per shipment and rule: while it is open or acknowledged, the
    rule firing again does not raise another.
    """

    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="alerts")
    key = models.CharField(max_length=120, help_text=_('"rule:<name>", "mkt", "freeze_thaw" or "gap"'))
    severity = models.CharField(max_length=10, choices=AlertSeverity.choices)
    status = models.CharField(max_length=12, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    message = models.CharField(max_length=500)
    triggered_at = models.DateTimeField(help_text=_("when the condition fired (device time)"))
    raised_at = models.DateTimeField(default=timezone.now, editable=False)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledgement = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)

    Severity = AlertSeverity
    Status = AlertStatus

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["shipment", "key"],
                condition=Q(status__in=["open", "acknowledged"]),
                name="alert_one_open_per_rule",
            ),
            models.UniqueConstraint(fields=["shipment", "key", "triggered_at"], name="alert_once_per_trigger"),
            models.CheckConstraint(
                condition=Q(severity__in=[s.value for s in AlertSeverity]), name="alert_severity_valid"
            ),
            models.CheckConstraint(
                condition=Q(status="open") | Q(acknowledged_at__isnull=False) | Q(resolved_at__isnull=False),
                name="alert_handled_has_time",
            ),
        ]
        indexes = [models.Index(fields=["status", "raised_at"], name="alert_inbox")]

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


# Recalls -------------------------------------------------------------------------------


class RecallKind(models.TextChoices):
    MANDATED = "mandated", _("Mandated by a regulator")
    VOLUNTARY = "voluntary", _("Voluntary, by the manufacturer")


class RecallClass(models.TextChoices):
    """FDA recall classification (21 CFR 7.3(m)): I is the most serious."""

    I = "I", _("Class I: may cause serious harm or death")  # noqa: E741 (the FDA's name)
    II = "II", _("Class II: may cause temporary or reversible harm")
    III = "III", _("Class III: unlikely to cause harm")


class RecallDepth(models.TextChoices):
    """How far down the supply chain the recall reaches (21 CFR 7.42(b)(1))."""

    WHOLESALE = "wholesale", _("Wholesale")
    RETAIL = "retail", _("Retail")
    CONSUMER = "consumer", _("Consumer")


class RecallStatus(models.TextChoices):
    OPEN = "open", _("Open")
    CLOSED = "closed", _("Closed")


class Recall(models.Model):
    """Batches (or serial ranges of them) that must come off the market, and why."""

    Kind = RecallKind
    Class = RecallClass
    Depth = RecallDepth
    Status = RecallStatus

    reference = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    classification = models.CharField(max_length=3, choices=Class.choices)
    depth = models.CharField(max_length=10, choices=Depth.choices)
    reason = models.TextField()
    instructions = models.TextField()
    # The manufacturer of every batch recalled; a recall concerns one firm's products.
    manufacturer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="recalls")
    initiated_by = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="recalls_initiated")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    issued_at = models.DateTimeField(default=timezone.now)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    closing_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=[k.value for k in RecallKind]), name="recall_kind_valid"),
            models.CheckConstraint(
                condition=Q(classification__in=[c.value for c in RecallClass]), name="recall_class_valid"
            ),
            models.CheckConstraint(condition=Q(depth__in=[d.value for d in RecallDepth]), name="recall_depth_valid"),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True) | Q(status="closed", closed_at__isnull=False),
                name="recall_closed_at_iff_closed",
            ),
        ]

    def __str__(self) -> str:
        return self.reference


class RecallItem(models.Model):
    """One batch a recall names: all of it, or only the serials from ``serial_from`` to ``serial_to``."""

    recall = models.ForeignKey(Recall, on_delete=models.PROTECT, related_name="items")
    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="recall_items")
    serial_from = models.CharField(max_length=20, blank=True)
    serial_to = models.CharField(max_length=20, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["recall", "batch"], name="recall_item_batch_once"),
            models.CheckConstraint(
                condition=Q(serial_from="", serial_to="") | Q(serial_from__gt="", serial_to__gt=""),
                name="recall_item_range_both_ends",
            ),
        ]
        indexes = [models.Index(fields=["batch"], name="recall_item_batch")]

    def __str__(self) -> str:
        span = f" serials {self.serial_from}..{self.serial_to}" if self.serial_from else ""
        return f"batch {self.batch_id}{span}"

    @property
    def whole_batch(self) -> bool:
        return not self.serial_from


class RecallNotice(models.Model):
    """What one affected organisation was told, and what it reported back."""

    recall = models.ForeignKey(Recall, on_delete=models.PROTECT, related_name="notices")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="recall_notices")
    # Units the trace placed with the organisation when the recall was issued: on hand, in its care in
    # transit, or on their way to it.
    units_expected = models.PositiveIntegerField()
    notified_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    units_found = models.PositiveIntegerField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["organisation__name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["recall", "organisation"], name="recall_notice_once_per_organisation"),
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True, units_found__isnull=True)
                | Q(acknowledged_at__isnull=False, units_found__isnull=False),
                name="recall_notice_found_iff_acknowledged",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recall_id} -> {self.organisation_id}"


class RecallShipment(models.Model):
    """A shipment that was carrying recalled goods when the recall was issued: flagged for its parties."""

    recall = models.ForeignKey(Recall, on_delete=models.PROTECT, related_name="flagged")
    shipment = models.ForeignKey(Shipment, on_delete=models.PROTECT, related_name="recall_flags")
    units = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["recall", "shipment"], name="recall_shipment_once"),
        ]

    def __str__(self) -> str:
        return f"{self.recall_id}: shipment {self.shipment_id}"


# DSCSA verification --------------------------------------------------------------------


class VerificationRequest(models.Model):
    """One product identifier verification request and the answer given (DSCSA: every one is kept)."""

    asked_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Who asked: the signed-in user, if any, and what the requester said about itself (e.g. its GLN).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    requester = models.CharField(max_length=200, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True, help_text=_("the requester's correlation id"))
    gtin = models.CharField(max_length=14)
    lot = models.CharField(max_length=20, blank=True)
    serial = models.CharField(max_length=20, blank=True)
    expiry = models.CharField(max_length=6, blank=True, help_text=_("YYMMDD, as asked"))
    verified = models.BooleanField()
    failure_reason = models.CharField(max_length=40, blank=True)
    response = models.JSONField(help_text=_("the answer sent, whole"))

    class Meta:
        ordering = ["-asked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.gtin}/{self.lot}/{self.serial}: {'verified' if self.verified else self.failure_reason}"


# EPCIS capture -------------------------------------------------------------------------


class CapturedEvent(models.Model):
    """A trading partner's EPCIS event taken in by ``/api/v1/epcis/capture``, kept as it was sent.

    Unique on its event ID for the organisation capturing it, so a document sent twice records its events
    once; one partner using an ID first cannot block (or read the outcome of) another's event under it.
    """

    event_id = models.CharField(max_length=200)
    captured_by = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    captured_at = models.DateTimeField(default=timezone.now)
    event_time = models.DateTimeField()
    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, null=True, blank=True, related_name="captured_events")
    custody_event = models.OneToOneField(
        CustodyEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="captured_from"
    )
    event = models.JSONField(help_text=_("the EPCIS event as received"))
    context = models.JSONField(
        null=True, blank=True, help_text=_("its document's @context, beyond the standard one: what its terms mean")
    )
    ours = models.BooleanField(
        default=False, help_text=_("one of the platform's own events, sent back: queries return it once, as ours")
    )
    outcome = models.CharField(max_length=500, help_text=_("what the platform recorded, or why not"))

    class Meta:
        ordering = ["-captured_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["captured_by", "event_id"], name="captured_event_once_per_organisation")
        ]

    def __str__(self) -> str:
        return self.event_id


# Audit log -----------------------------------------------------------------------------


class AuditKind(models.TextChoices):
    SIGNIN_SUCCEEDED = "signin.succeeded", _("Sign-in succeeded")
    SIGNIN_FAILED = "signin.failed", _("Sign-in failed")
    ACCESS_DENIED = "access.denied", _("Access denied")
    RECALL_ISSUED = "recall.issued", _("Recall issued")
    RECALL_ACKNOWLEDGED = "recall.acknowledged", _("Recall acknowledged")
    RECALL_CLOSED = "recall.closed", _("Recall closed")
    KEY_ROTATED = "ledger.key_rotated", _("Ledger key rotated")
    LEDGER_EXPORTED = "ledger.exported", _("Ledger exported")
    EPCIS_QUERIED = "epcis.queried", _("EPCIS events queried")
    TOKEN_REVOKED = "token.revoked", _("API token revoked")
    CODES_NOT_GENUINE = "digital_link.misses", _("Too many codes not genuine looked up")


class AuditEvent(models.Model):
    """Who did, or tried, something security-relevant: written by ``traceability.audit.record`` only.

    Append-only: database triggers refuse UPDATE and DELETE (``traceability/audit.py``),
    so neither the application nor anyone with its database account can rewrite it.
    """

    Kind = AuditKind

    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=40, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text=_("as typed, for a failed sign-in"))
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    detail = models.JSONField(default=dict)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["kind", "at"])]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=[k.value for k in AuditKind]), name="auditevent_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.username or '-'}"


# Dispensing ----------------------------------------------------------------------------


class Dispensing(models.Model):
    """A unit handed to a patient by a dispenser: the end of its traceable life (DSCSA)."""

    serial = models.OneToOneField(SerialNumber, on_delete=models.PROTECT, related_name="dispensing")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    dispensed_at = models.DateTimeField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["dispensed_at", "id"]

    def __str__(self) -> str:
        return f"{self.serial_id} at {self.site_id}"


# API tokens ----------------------------------------------------------------------------


class ApiToken(models.Model):
    """A key for ``Authorization: Token <key>``, kept as its SHA-256 digest: the key itself is shown once, when issued.

    Issued and revoked through ``traceability.services``; a user holds one per client. ``prefix`` (the key's
    first characters) tells tokens apart on screen without being enough to use one.
    """

    LAST_USED_EVERY = datetime.timedelta(minutes=1)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False, help_text=_("SHA-256 of the key, in hex"))
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Fixed when issued (API_TOKEN_DAYS then), as its holder was told; null: it never expires.
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(digest__regex=r"\A[0-9a-f]{64}\Z"), name="apitoken_digest_sha256_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}…"

    @staticmethod
    def digest_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def expiry_from(now: datetime.datetime) -> datetime.datetime | None:
        """When a token issued ``now`` stops working: ``API_TOKEN_DAYS`` later, or never (0)."""
        days = int(settings.API_TOKEN_DAYS)
        return now + datetime.timedelta(days=days) if days > 0 else None

    def mark_used(self) -> None:
        """Records that the token was just used, at most once every ``LAST_USED_EVERY``.

        Most requests write nothing: the row already read says the token was used lately. Otherwise one
        conditional UPDATE, which concurrent requests cannot repeat within the interval.
        """
        now = timezone.now()
        stale = now - self.LAST_USED_EVERY
        if self.last_used_at is not None and self.last_used_at > stale:
            return
        ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=self.pk).update(
            last_used_at=now
        )
        self.last_used_at = now
