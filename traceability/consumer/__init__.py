"""The consumer pages at the GS1 Digital Link paths, and DSCSA verification requests at the same links.

``views`` answers the links, ``reads`` gets what a page shows in two queries,
``check`` judges the code on the pack (genuine, counterfeit, recalled,
expired: pure), ``verdict`` judges the cold chain (pure), ``words`` says it in
the reader's language, ``cache`` keeps rendered pages keyed by what they
show, and ``linkset`` writes the RFC 9264 linkset. ``verification`` answers
``?linkType=verificationService`` with ``lms``, the GS1 Lightweight Messaging
JSON of the same ``check``.

The Simplified Chinese catalogue is ``locale/zh_Hans/LC_MESSAGES/django.po``, holding the
consumer strings only; its compiled ``django.mo`` is committed beside it, since a fresh machine
may have no GNU gettext. After changing a consumer string, refresh the catalogue from the
consumer files alone, translate every new ``msgstr``, and compile::

    DEBUG=1 .venv/bin/python manage.py makemessages -l zh_Hans --no-obsolete --no-wrap --add-location file \\
      -i .venv -i var -i docker -i tests -i iot_ingest -i ledger -i locale -i manage.py \\
      -i "templates/[!c]*" -i "traceability/[!c]*" -i traceability/coldchain.py -i traceability/celery.py
    DEBUG=1 .venv/bin/python manage.py compilemessages -l zh_Hans -i .venv

``tests/traceability/test_consumer.py`` fails while a consumer string is missing from the
catalogue, a translation is empty or fuzzy, or the ``.mo`` is older than the ``.po``.
"""
