"""QR codes for GS1 Digital Link URIs, as SVG or PNG."""

from __future__ import annotations

import io

import qrcode
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathImage

FORMATS = {"svg": (SvgPathImage, "image/svg+xml"), "png": (PyPNGImage, "image/png")}


def render(data: str, image_format: str) -> tuple[bytes, str]:
    """The QR code for ``data``; error correction M, as GS1 recommends for Digital Link."""
    factory, content_type = FORMATS[image_format]
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=10, border=4)
    code.add_data(data)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image(image_factory=factory).save(buffer)
    return buffer.getvalue(), content_type
