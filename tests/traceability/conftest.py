"""Fixtures the consumer-page and verification tests share."""

from __future__ import annotations

import pytest

from tests import factories
from tests.conftest import Persona
from traceability import services
from traceability.models import Product


@pytest.fixture
def product(manufacturer: Persona) -> Product:
    return services.product_register(
        actor=manufacturer.user,
        gtin=factories.gtin(),
        name="Morbivax measles vaccine",
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
        freeze_sensitive=True,
    )
