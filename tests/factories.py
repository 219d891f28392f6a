"""factory_boy factories: valid rows with valid GS1 identifiers, nothing more."""

from __future__ import annotations

import datetime
import itertools

import factory
from django.contrib.auth import get_user_model

from traceability import coldchain, gs1
from traceability.models import Batch, Membership, Organisation, Product, Site

_numbers = itertools.count(1)


def gln() -> str:
    body = f"40{next(_numbers):010d}"
    return body + gs1.check_digit(body)


def gtin() -> str:
    body = f"0400{next(_numbers):09d}"
    return body + gs1.check_digit(body)


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation

    name = factory.Sequence(lambda n: f"Organisation {n}")
    kind = Organisation.Kind.MANUFACTURER
    gln = factory.LazyFunction(gln)


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"Site {n}")
    gln = factory.LazyFunction(gln)
    city = "Basel"
    country = "CH"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organisation = factory.SubFactory(OrganisationFactory)
    role = Membership.Role.OPERATOR


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    gtin = factory.LazyFunction(gtin)
    name = factory.Sequence(lambda n: f"Vaccine {n}")
    dosage_form = "suspension for injection"
    strength = "0.5 ml"
    manufacturer = factory.SubFactory(OrganisationFactory)
    storage_profile = coldchain.StorageProfile.REFRIGERATED
    freeze_sensitive = True


class BatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Batch

    product = factory.SubFactory(ProductFactory)
    lot = factory.Sequence(lambda n: f"LOT{n:05d}")
    manufactured_on = factory.LazyFunction(lambda: datetime.date.today() - datetime.timedelta(days=30))
    expires_on = factory.LazyFunction(lambda: datetime.date.today() + datetime.timedelta(days=365))
    quantity = 1000
