"""URLs of the recall pages (under ``recalls/``)."""

from __future__ import annotations

from django.urls import URLPattern, path

from traceability.pages import recalls

urlpatterns: list[URLPattern] = [
    path("", recalls.recall_list, name="recalls"),
    path("new", recalls.recall_new, name="recall-new"),
    path("<int:pk>/", recalls.recall_detail, name="recall-detail"),
    path("<int:pk>/acknowledge", recalls.recall_acknowledge, name="recall-acknowledge"),
    path("<int:pk>/close", recalls.recall_close, name="recall-close"),
    path("trace/batches/<int:pk>/", recalls.batch_trace, name="batch-trace"),
]
