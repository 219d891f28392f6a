"""The ledger's tables. ``Entry``, ``EntryReader``, ``TreeNode`` and ``Checkpoint``
are append-only: database triggers (migration 0002) refuse UPDATE and DELETE.

``PendingEvent`` is the transactional outbox: a domain change and its event
commit together; the sequencer turns events into entries and deletes them.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class SigningKey(models.Model):
    """Every key that ever signed for the log; the private key of the active one is in LEDGER_KEY_FILE."""

    name = models.CharField(max_length=200, help_text="the log's origin")
    key_id = models.CharField(max_length=8, unique=True)
    public_key = models.BinaryField(max_length=32)
    active_from = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["active_from", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(retired_at__isnull=True), name="ledger_one_active_key"
            ),
            models.CheckConstraint(condition=Q(key_id__regex=r"^[0-9a-f]{8}$"), name="ledger_key_id_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id}"


class PendingEvent(models.Model):
    """An event committed with its domain change, waiting for the sequencer."""

    time = models.DateTimeField(default=timezone.now)
    type = models.CharField(max_length=64)
    subject = models.CharField(max_length=200)
    data = models.JSONField()
    readers = models.JSONField(default=list, help_text="parties that may read the entry")
    public = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.type} {self.subject}"


class Entry(models.Model):
    seq = models.BigIntegerField(primary_key=True)
    time = models.DateTimeField()
    type = models.CharField(max_length=64, db_index=True)
    subject = models.CharField(max_length=200, db_index=True)
    leaf = models.BinaryField(help_text="RFC 8785 canonical JSON of the entry")
    hash = models.BinaryField(max_length=32, unique=True)
    signature = models.BinaryField(max_length=64)
    key_id = models.CharField(max_length=8)
    public = models.BooleanField(default=False)
    event_id = models.BigIntegerField(unique=True, help_text="the outbox event it came from; sequenced once")

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "entries"
        constraints = [models.CheckConstraint(condition=Q(seq__gte=0), name="ledger_seq_not_negative")]

    def __str__(self) -> str:
        return f"{self.seq} {self.type} {self.subject}"


class EntryReader(models.Model):
    """A party (an opaque string the appender chose) that may read an entry."""

    entry = models.ForeignKey(Entry, on_delete=models.PROTECT, related_name="readers")
    party = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry", "party"], name="ledger_reader_once")]
        indexes = [models.Index(fields=["party", "entry"])]

    def __str__(self) -> str:
        return f"{self.party} reads {self.entry_id}"


class TreeNode(models.Model):
    """The hash of a complete subtree: leaves [index * 2**level, (index + 1) * 2**level)."""

    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["level", "index"], name="ledger_node_once")]

    def __str__(self) -> str:
        return f"node {self.level}/{self.index}"


class Checkpoint(models.Model):
    size = models.BigIntegerField(unique=True)
    root = models.BinaryField(max_length=32)
    note = models.TextField(help_text="the C2SP signed note, byte for byte")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["size"]

    def __str__(self) -> str:
        return f"checkpoint {self.size}"
