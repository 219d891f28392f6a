"""The QR codes the API serves, read back with a real decoder (zxing-cpp)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import png
import pytest
import zxingcpp

from tests.conftest import Persona
from tests.factories import BatchFactory, ProductFactory
from traceability.models import SerialNumber

pytestmark = pytest.mark.django_db
BOX = 10  # pixels per module (traceability.qr)


def pixels(image: bytes) -> tuple[int, int, bytes]:
    """Width, height and one byte per pixel (0 black, 255 white) of a PNG."""
    width, height, rows, info = png.Reader(bytes=image).asDirect()
    assert info["greyscale"]
    assert not info["alpha"]
    top = (1 << info["bitdepth"]) - 1
    data = bytes(value * 255 // top for row in rows for value in row)
    return width, height, data


def decoded(image: bytes) -> list[Any]:
    width, height, data = pixels(image)
    return list(zxingcpp.read_barcodes(memoryview(data).cast("B", shape=[height, width])))


@pytest.fixture
def batch(manufacturer: Persona, settings: Any) -> Any:
    settings.BASE_URL = "https://id.example-pharma.com"
    batch = BatchFactory(product=ProductFactory(manufacturer=manufacturer.organisation, gtin="09506000134352"))
    SerialNumber.objects.create(batch=batch, product=batch.product, serial="SN-0001/A")
    return batch


def test_a_batch_qr_code_decodes_to_its_digital_link_with_error_correction_m(manufacturer: Persona, batch: Any) -> None:
    client = manufacturer.client()
    link = client.get(f"/api/v1/batches/{batch.pk}/").json()["digital_link"]
    response = client.get(f"/api/v1/batches/{batch.pk}/qr.png")
    assert response["Content-Type"] == "image/png"

    [code] = decoded(response.content)
    assert (code.text, code.format, code.ec_level) == (link, zxingcpp.BarcodeFormat.QRCode, "M")
    assert link.startswith("https://id.example-pharma.com/01/09506000134352/10/")


def test_a_units_qr_code_decodes_to_the_digital_link_with_its_serial(manufacturer: Persona, batch: Any) -> None:
    response = manufacturer.client().get(f"/api/v1/batches/{batch.pk}/serials/SN-0001%2FA/qr.png")
    [code] = decoded(response.content)
    assert code.text == batch.digital_link(serial="SN-0001/A")
    assert "/21/SN-0001%2FA" in code.text


def test_the_code_keeps_a_quiet_zone_of_four_modules(manufacturer: Persona, batch: Any) -> None:
    width, height, data = pixels(manufacturer.client().get(f"/api/v1/batches/{batch.pk}/qr.png").content)
    quiet = 4 * BOX
    rows = [data[y * width : (y + 1) * width] for y in range(height)]
    border = rows[:quiet] + rows[-quiet:] + [row[:quiet] + row[-quiet:] for row in rows]
    assert all(value == 255 for row in border for value in row)
    assert any(value == 0 for value in rows[quiet][quiet : quiet + BOX])  # the finder pattern starts right inside


def test_the_svg_code_is_well_formed_svg(manufacturer: Persona, batch: Any) -> None:
    response = manufacturer.client().get(f"/api/v1/batches/{batch.pk}/qr.svg")
    assert response["Content-Type"] == "image/svg+xml"
    root = ET.fromstring(response.content)  # noqa: S314  (our own response)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}path") is not None
