"""Frame decoding and framing-level image rules, shared by both ports.

Everything here turns client bytes or objects into an H x W x 3 uint8 RGB array; the model's own
preprocessing (resize to the tower's size, normalisation) stays in the library. Pillow and numpy only.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

RAW_SIDE = 256
RAW_FRAME_BYTES = RAW_SIDE * RAW_SIDE * 3  # 196,608: a 256x256 raw RGB frame
BMP_PROBE_BYTES = 30  # file header (14) + the first 16 bytes of any DIB header: enough to size a BMP
ENCODED_FORMATS = ("PNG", "JPEG", "BMP")
ResizeMode = Literal["pad", "crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("pad", "crop", "stretch")


class ImageError(ValueError):
    """A frame that cannot be used; the message names what was wrong and what is expected."""


@dataclass(frozen=True)
class EncodedFrame:
    """A frame as it came off the TCP port: payload bytes plus the header's size hints."""

    data: bytes
    width: int | None = None
    height: int | None = None


def check_size(width: int, height: int, max_side: int) -> None:
    """Refuse empty frames and frames over the decoded-size limit (decompression bombs)."""
    if width < 1 or height < 1:
        raise ImageError(f"image is {width}x{height}; expected at least 1x1")
    if width > max_side or height > max_side:
        raise ImageError(f"image is {width}x{height}; the limit is {max_side}x{max_side}")


def bmp_total_size(probe: bytes) -> int | None:
    """Size in bytes of the BMP file whose first BMP_PROBE_BYTES bytes are `probe`, or None.

    Uses the file header's bfSize; when a writer left it 0, computes it from the DIB header
    (offset + padded rows). None means "not a plausible BMP header" (then the bytes are raw RGB).
    """
    if len(probe) < BMP_PROBE_BYTES or probe[:2] != b"BM":
        return None
    bf_size, reserved, off_bits, dib_size = struct.unpack_from("<IIII", probe, 2)
    if reserved != 0 or dib_size not in (12, 40, 52, 56, 64, 108, 124) or off_bits < 14 + dib_size:
        return None
    if bf_size >= BMP_PROBE_BYTES:
        return bf_size
    if dib_size == 12:
        width, height, _planes, bpp = struct.unpack_from("<HHHH", probe, 18)
    else:
        width, height, _planes, bpp = struct.unpack_from("<iiHH", probe, 18)
    if width <= 0 or height == 0 or bpp not in (1, 4, 8, 16, 24, 32):
        return None
    stride = (width * bpp + 31) // 32 * 4
    return off_bits + stride * abs(height)


def _decode_encoded(data: bytes, max_side: int) -> np.ndarray:
    """Decode PNG/JPEG/BMP bytes with Pillow, checking the size before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ENCODED_FORMATS)
            check_size(img.width, img.height, max_side)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise ImageError(f"could not decode the {len(data)}-byte payload as PNG, JPEG or BMP: {exc}") from None
    return pil_to_rgb(img, max_side)


def _is_encoded(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:2] == b"BM"


def decode_frame(frame: EncodedFrame, max_side: int) -> np.ndarray:
    """TCP payload -> H x W x 3 uint8 RGB (raw RGB by width/height or 256x256, else PNG/JPEG/BMP)."""
    data, width, height = frame.data, frame.width, frame.height
    if (width is None) != (height is None):
        raise ImageError("give both 'width' and 'height' (raw RGB size) or neither")
    if width is not None and height is not None:
        check_size(width, height, max_side)
        if len(data) == width * height * 3:
            return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    if _is_encoded(data):
        return _decode_encoded(data, max_side)
    if len(data) == RAW_FRAME_BYTES and width is None:
        return np.frombuffer(data, np.uint8).reshape(RAW_SIDE, RAW_SIDE, 3)
    expected = (
        f"width*height*3 = {width * height * 3} bytes of raw RGB"
        if width is not None and height is not None
        else f"{RAW_FRAME_BYTES} bytes of raw 256x256 RGB"
    )
    raise ImageError(
        f"payload of {len(data)} bytes is neither a PNG/JPEG/BMP image nor raw RGB; expected {expected}"
        " or an encoded image"
    )


def pil_to_rgb(img: Image.Image, max_side: int) -> np.ndarray:
    """Any PIL image -> H x W x 3 uint8 RGB array (alpha dropped, palettes expanded)."""
    check_size(img.width, img.height, max_side)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def array_to_rgb(arr: np.ndarray, max_side: int) -> np.ndarray:
    """A client's numpy frame -> H x W x 3 uint8 RGB; accepts H x W x 4 (alpha dropped)."""
    if arr.dtype != np.uint8:
        raise ImageError(f"image array has dtype {arr.dtype}; expected uint8 H x W x 3 RGB")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"image array has shape {arr.shape}; expected H x W x 3 (uint8 RGB)")
    check_size(arr.shape[1], arr.shape[0], max_side)
    return np.ascontiguousarray(arr[:, :, :3])


def apply_resize_mode(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Make the frame square the way the client asked, before the model's own resize.

    pad: black borders around the frame (centred); crop: the centre square; stretch: unchanged (the
    model's preprocessing stretches any frame to its square input, exactly as the original server did).
    """
    h, w = rgb.shape[:2]
    if mode == "stretch" or h == w:
        return rgb
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return rgb[top : top + side, left : left + side]
    if mode == "pad":
        side = max(h, w)
        out = np.zeros((side, side, 3), np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        out[top : top + h, left : left + w] = rgb
        return out
    raise ImageError(f"resize_mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
