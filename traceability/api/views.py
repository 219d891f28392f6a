"""REST API: one view per operation, each one call into a service or selector."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from traceability import audit, gs1, qr, selectors, services, signin
from traceability.api import filters
from traceability.api import serializers as s
from traceability.api.authentication import TokenAuthentication
from traceability.models import (
    Alert,
    ApiToken,
    Batch,
    CustodyEvent,
    Excursion,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    ShipmentItem,
    Site,
)

ERRORS = {
    400: OpenApiResponse(s.ErrorOut, description="Malformed input: each wrong field with its reason."),
    401: OpenApiResponse(s.ErrorOut, description="Not signed in."),
    403: OpenApiResponse(s.ErrorOut, description="Visible to you, but your organisation or role may not do this."),
    404: OpenApiResponse(s.ErrorOut, description="No such object, or not visible to your organisation."),
}
READ_ERRORS = {code: ERRORS[code] for code in (401, 404)}


def _schema_only(view: APIView) -> bool:
    """drf-spectacular inspects views without a signed-in user."""
    return getattr(view, "swagger_fake_view", False)


def _organisation(request: Request) -> Organisation:
    return _actor(request).membership.organisation


def _organisation_by_gln(field: str, gln: str) -> Organisation:
    try:
        return Organisation.objects.get(gln=gln)
    except Organisation.DoesNotExist:
        raise ValidationError({field: [f"no organisation has GLN {gln!r}."]}) from None


def _site_by_gln(field: str, gln: str) -> Site:
    try:
        return Site.objects.get(gln=gln)
    except Site.DoesNotExist:
        raise ValidationError({field: [f"no site has GLN {gln!r}."]}) from None


def _valid(serializer_class: type[Serializer[Any]], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    data: dict[str, Any] = serializer.validated_data
    return data


def _actor(request: Request) -> User:
    """The signed-in user; ``IsMember`` has already refused anyone else."""
    return cast(User, request.user)


# Identity -------------------------------------------------------------------


class TokenView(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    def get_authenticators(self) -> list[BaseAuthentication]:
        # DELETE names the token to revoke by presenting it: the token alone, not a session. POST takes no
        # credentials but the body's, so a stale token in a client's headers does not stop it signing in again.
        if self._method() == "DELETE":
            return [TokenAuthentication()]
        return []

    def get_permissions(self) -> list[BasePermission]:
        return [IsAuthenticated()] if self._method() == "DELETE" else [AllowAny()]

    def _method(self) -> str | None:
        # None while drf-spectacular builds the view for the schema, before it gives it a request.
        request = getattr(self, "request", None)
        return request.method if request is not None else None

    @extend_schema(
        request=s.TokenIn,
        responses={
            200: s.TokenOut,
            400: ERRORS[400],
            429: OpenApiResponse(
                s.ErrorOut,
                description="Too many requests from this address, or too many failed sign-ins for this account or "
                "from this address (the sign-in page's lock-out): try again after Retry-After seconds.",
            ),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        """Signs in: issues a new token on every call, one per client. The key is in this answer only."""
        data = _valid(s.TokenIn, request)
        try:
            user = signin.authenticate(request, username=data["username"], password=data["password"])
        except signin.LockedOut:
            raise Throttled(
                wait=settings.LOGIN_LOCKOUT_SECONDS,
                detail="Too many failed sign-ins for this account or from this address.",
            ) from None
        if user is None or not user.is_active:
            raise ValidationError({"non_field_errors": ["Unable to sign in with these credentials."]})
        audit.record("signin.succeeded", user=user, request=request, path=request.path)
        return Response(s.TokenOut(services.api_token_issue(user=user)).data)

    @extend_schema(
        request=None,
        responses={
            204: OpenApiResponse(description="The token is revoked: its key is refused from now on."),
            401: ERRORS[401],
        },
    )
    def delete(self, request: Request) -> Response:
        """Revokes the token this request is sent with (``Authorization: Token <key>``); your other tokens remain."""
        if not isinstance(request.auth, ApiToken):  # signed in with a session: no token to revoke
            raise ValidationError({"detail": ["Send the token to revoke as Authorization: Token <key>."]})
        services.api_token_revoke(actor=_actor(request), token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses={200: s.MeOut, 401: ERRORS[401]})
    def get(self, request: Request) -> Response:
        return Response(s.MeOut(request.user).data)


# Organisations and sites: a public directory of GS1 identities --------------


class OrganisationList(generics.ListAPIView[Organisation]):
    queryset = Organisation.objects.all()
    serializer_class = s.OrganisationOut
    filterset_class = filters.OrganisationFilter


class OrganisationDetail(generics.RetrieveAPIView[Organisation]):
    queryset = Organisation.objects.all()
    serializer_class = s.OrganisationOut


class SiteList(generics.ListAPIView[Site]):
    queryset = Site.objects.select_related("organisation")
    serializer_class = s.SiteOut
    filterset_class = filters.SiteFilter

    @extend_schema(request=s.SiteIn, responses={201: s.SiteOut, **ERRORS})
    def post(self, request: Request) -> Response:
        site = services.site_create(actor=_actor(request), **_valid(s.SiteIn, request))
        return Response(s.SiteOut(site).data, status=status.HTTP_201_CREATED)


class SiteDetail(generics.RetrieveAPIView[Site]):
    queryset = Site.objects.select_related("organisation")
    serializer_class = s.SiteOut


# Products and batches -------------------------------------------------------


class ProductList(generics.ListAPIView[Product]):
    serializer_class = s.ProductOut
    filterset_class = filters.ProductFilter

    def get_queryset(self) -> QuerySet[Product]:
        if _schema_only(self):
            return Product.objects.none()
        return selectors.visible_products(_organisation(self.request)).select_related("manufacturer")

    @extend_schema(request=s.ProductIn, responses={201: s.ProductOut, **ERRORS})
    def post(self, request: Request) -> Response:
        product = services.product_register(actor=_actor(request), **_valid(s.ProductIn, request))
        return Response(s.ProductOut(product).data, status=status.HTTP_201_CREATED)


class ProductDetail(generics.RetrieveAPIView[Product]):
    serializer_class = s.ProductOut
    get_queryset = ProductList.get_queryset


def _batches(request: Request) -> QuerySet[Batch]:
    return (
        selectors.visible_batches(_organisation(request))
        .select_related("product")
        .annotate(serial_count=Count("serials"))
        .order_by("-created_at", "-id")  # GROUP BY queries drop Meta.ordering
    )


class BatchList(generics.ListAPIView[Batch]):
    serializer_class = s.BatchOut
    filterset_class = filters.BatchFilter

    def get_queryset(self) -> QuerySet[Batch]:
        if _schema_only(self):
            return Batch.objects.none()
        return _batches(self.request)

    @extend_schema(request=s.BatchIn, responses={201: s.BatchOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = _valid(s.BatchIn, request)
        try:
            gtin = gs1.normalize_gtin(data.pop("gtin"))
        except gs1.GS1Error as error:
            raise ValidationError({"gtin": [str(error)]}) from error
        product = selectors.visible_products(_organisation(request)).filter(gtin=gtin).first()
        if product is None:
            raise ValidationError({"gtin": [f"none of your products has GTIN {gtin}."]})
        batch = services.batch_register(actor=_actor(request), product=product, expires_on=data.pop("expiry"), **data)
        return Response(s.BatchOut(_batches(request).get(pk=batch.pk)).data, status=status.HTTP_201_CREATED)


class BatchDetail(generics.RetrieveAPIView[Batch]):
    serializer_class = s.BatchOut
    get_queryset = BatchList.get_queryset


class BatchSerialList(generics.ListAPIView[SerialNumber]):
    serializer_class = s.SerialOut
    filterset_class = filters.SerialFilter

    def get_queryset(self) -> QuerySet[SerialNumber]:
        if _schema_only(self):
            return SerialNumber.objects.none()
        batch = get_object_or_404(_batches(self.request), pk=self.kwargs["pk"])
        return batch.serials.select_related("batch__product")


QR_RESPONSES: dict[Any, Any] = {(200, "image/svg+xml"): bytes, (200, "image/png"): bytes, **READ_ERRORS}


def _qr_response(link: str, image_format: str) -> HttpResponse:
    image, content_type = qr.render(link, image_format)
    response = HttpResponse(image, content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


class BatchQR(APIView):
    @extend_schema(responses=QR_RESPONSES)
    def get(self, request: Request, pk: int, image_format: str) -> HttpResponse:
        batch = get_object_or_404(_batches(request), pk=pk)
        return _qr_response(batch.digital_link(), image_format)


class SerialQR(APIView):
    @extend_schema(responses=QR_RESPONSES)
    def get(self, request: Request, pk: int, serial: str, image_format: str) -> HttpResponse:
        batch = get_object_or_404(_batches(request), pk=pk)
        unit = get_object_or_404(batch.serials, serial=serial)
        return _qr_response(batch.digital_link(serial=unit.serial), image_format)


# Shipments ------------------------------------------------------------------


def _shipments(request: Request) -> QuerySet[Shipment]:
    return (
        selectors.visible_shipments(_organisation(request))
        .select_related("shipper", "carrier", "consignee", "custodian", "origin", "destination")
        .prefetch_related(Prefetch("items", queryset=ShipmentItem.objects.select_related("batch__product")))
    )


def _shipments_in_full(request: Request) -> QuerySet[Shipment]:
    custody = CustodyEvent.objects.select_related("from_organisation", "to_organisation", "site")
    return (
        _shipments(request)
        .select_related("contract")
        .prefetch_related("contract__rules", Prefetch("custody_events", queryset=custody))
    )


def _shipment_out(request: Request, shipment: Shipment, code: int = status.HTTP_200_OK) -> Response:
    return Response(s.ShipmentOut(_shipments_in_full(request).get(pk=shipment.pk)).data, status=code)


class ShipmentList(generics.ListAPIView[Shipment]):
    serializer_class = s.ShipmentSummaryOut
    filterset_class = filters.ShipmentFilter

    def get_queryset(self) -> QuerySet[Shipment]:
        if _schema_only(self):
            return Shipment.objects.none()
        return _shipments(self.request)

    @extend_schema(request=s.ShipmentIn, responses={201: s.ShipmentOut, **ERRORS})  # created: in full
    def post(self, request: Request) -> Response:
        data = _valid(s.ShipmentIn, request)
        visible = selectors.visible_batches(_organisation(request)).in_bulk([item["batch"] for item in data["items"]])
        missing = [item["batch"] for item in data["items"] if item["batch"] not in visible]
        if missing:
            raise ValidationError({"items": [f"no batch with id {missing[0]} is visible to you."]})
        shipment = services.shipment_create(
            actor=_actor(request),
            carrier=_organisation_by_gln("carrier", data["carrier"]),
            consignee=_organisation_by_gln("consignee", data["consignee"]),
            origin=_site_by_gln("origin", data["origin"]),
            destination=_site_by_gln("destination", data["destination"]),
            items=[
                services.ItemSpec(batch=visible[item["batch"]], quantity=item["quantity"]) for item in data["items"]
            ],
            logging_interval_seconds=data["logging_interval_seconds"],
        )
        return _shipment_out(request, shipment, status.HTTP_201_CREATED)


class ShipmentDetail(generics.RetrieveAPIView[Shipment]):
    serializer_class = s.ShipmentOut

    def get_queryset(self) -> QuerySet[Shipment]:
        if _schema_only(self):
            return Shipment.objects.none()
        return _shipments_in_full(self.request)


class ShipmentDispatch(APIView):
    @extend_schema(request=s.DispatchIn, responses={200: s.ShipmentOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        data = _valid(s.DispatchIn, request)
        shipment = services.shipment_dispatch(actor=_actor(request), shipment=shipment, **data)
        return _shipment_out(request, shipment)


class ShipmentHandover(APIView):
    @extend_schema(request=s.HandoverIn, responses={200: s.ShipmentOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        data = _valid(s.HandoverIn, request)
        services.custody_transfer(
            actor=_actor(request),
            shipment=shipment,
            to_organisation=_organisation_by_gln("to_organisation", data["to_organisation"]),
            site=_site_by_gln("site", data["site"]) if data["site"] else None,
            location=data["location"],
            note=data["note"],
            occurred_at=data["occurred_at"],
        )
        return _shipment_out(request, shipment)


class ShipmentReceive(APIView):
    @extend_schema(request=s.ReceiveIn, responses={200: s.ShipmentOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        data = _valid(s.ReceiveIn, request)
        shipment = services.shipment_receive(actor=_actor(request), shipment=shipment, **data)
        return _shipment_out(request, shipment)


# Monitoring -----------------------------------------------------------------------


class ShipmentExcursions(generics.ListAPIView[Excursion]):
    serializer_class = s.ExcursionOut

    def get_queryset(self) -> QuerySet[Excursion]:
        if _schema_only(self):
            return Excursion.objects.none()
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(self.request)), pk=self.kwargs["pk"])
        return shipment.excursions.all()


def _alerts(request: Request) -> QuerySet[Alert]:
    visible = selectors.visible_shipments(_organisation(request))
    return Alert.objects.filter(shipment__in=visible).select_related("shipment", "acknowledged_by", "resolved_by")


class AlertList(generics.ListAPIView[Alert]):
    """Alerts of the shipments you ship, carry, receive or made the goods of; newest first."""

    serializer_class = s.AlertOut
    filterset_class = filters.AlertFilter

    def get_queryset(self) -> QuerySet[Alert]:
        if _schema_only(self):
            return Alert.objects.none()
        return _alerts(self.request)


class AlertDetail(generics.RetrieveAPIView[Alert]):
    serializer_class = s.AlertOut

    def get_queryset(self) -> QuerySet[Alert]:
        if _schema_only(self):
            return Alert.objects.none()
        return _alerts(self.request)


class AlertAcknowledge(APIView):
    @extend_schema(request=s.AlertCommentIn, responses={200: s.AlertOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(_alerts(request), pk=pk)
        data = _valid(s.AlertCommentIn, request)
        services.alert_acknowledge(actor=_actor(request), alert=alert, comment=data["comment"])
        return Response(s.AlertOut(_alerts(request).get(pk=pk)).data)


class AlertResolve(APIView):
    @extend_schema(request=s.AlertCommentIn, responses={200: s.AlertOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(_alerts(request), pk=pk)
        data = _valid(s.AlertCommentIn, request)
        services.alert_resolve(actor=_actor(request), alert=alert, comment=data["comment"])
        return Response(s.AlertOut(_alerts(request).get(pk=pk)).data)
