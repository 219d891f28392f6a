"""The ledger's HTTP contract (spec/ledger.md, "HTTP"), mounted at /api/v1/ledger/."""

from __future__ import annotations

from django.urls import path

from ledger import api

urlpatterns = [
    path("checkpoint", api.CheckpointView.as_view(), name="ledger-checkpoint"),
    path("keys", api.KeyList.as_view(), name="ledger-keys"),
    path("entries/", api.EntryList.as_view(), name="ledger-entry-list"),
    path("entries/<int:seq>", api.EntryDetail.as_view(), name="ledger-entry-detail"),
    path("proof/inclusion", api.InclusionProofView.as_view(), name="ledger-proof-inclusion"),
    path("proof/consistency", api.ConsistencyProofView.as_view(), name="ledger-proof-consistency"),
]
