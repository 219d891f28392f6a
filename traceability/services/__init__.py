"""Everything that changes the cold-chain domain goes through these functions.

Each service is one transaction, takes keyword arguments, checks who may do
it, and raises ``ValidationError`` (the input is wrong: a 400 naming the
field) or ``PermissionDenied`` (the actor may see the object but not do
this). Callers look objects up through ``selectors`` first, so an object the
actor may not see never reaches a service. Each appends its ledger entry in
its own transaction.
"""

from __future__ import annotations

from traceability.services._common import actor_organisation
from traceability.services.api_tokens import IssuedToken, api_token_issue, api_token_revoke
from traceability.services.batch_status import batch_quarantine, batch_release
from traceability.services.catalogue import batch_register, product_register, site_create
from traceability.services.dispensing import units_dispense
from traceability.services.monitoring import alert_acknowledge, alert_resolve, monitoring_apply, readings_committed
from traceability.services.recalls import RecallItemSpec, recall_acknowledge, recall_close, recall_issue, recall_preview
from traceability.services.shipments import (
    ItemSpec,
    custody_transfer,
    shipment_create,
    shipment_dispatch,
    shipment_receive,
)

__all__ = [
    "IssuedToken",
    "ItemSpec",
    "RecallItemSpec",
    "actor_organisation",
    "alert_acknowledge",
    "alert_resolve",
    "api_token_issue",
    "api_token_revoke",
    "batch_quarantine",
    "batch_register",
    "batch_release",
    "custody_transfer",
    "monitoring_apply",
    "product_register",
    "readings_committed",
    "recall_acknowledge",
    "recall_close",
    "recall_issue",
    "recall_preview",
    "shipment_create",
    "shipment_dispatch",
    "shipment_receive",
    "site_create",
    "units_dispense",
]
