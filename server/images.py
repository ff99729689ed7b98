"""Frames as the ports deliver them -> RGB arrays, with every limit checked before pixels are decoded.

TCP payloads (raw RGB, PNG, JPEG, BMP) and pickled PIL images are turned into pixels here; what a
frame may be once decoded (dtype, channels, sides) is the library's one rule, `nitrogen.frames`. The
model's own preprocessing (resize to the tower's size, normalisation) stays in the library.

Decode work is bounded per request: a JPEG may have at most MAX_JPEG_SCANS scans, and pixels x scans
(the work of a progressive decode) at most DECODE_WORK_PER_PIXEL x max_side^2. Images whose work is
over LIGHT_WORK are returned undecoded (`PendingDecode`) so that the service can decode them on a lane
of their own, where they cannot hold up other clients' small frames.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from nitrogen.frames import check_size, to_rgb_array

from .errors import ClientError, describe

RAW_SIDE = 256
RAW_FRAME_BYTES = RAW_SIDE * RAW_SIDE * 3  # 196,608: a 256x256 raw RGB frame
BMP_PROBE_BYTES = 30  # file header (14) + the first 16 bytes of any DIB header: enough to size a BMP
ENCODED_FORMATS = ("PNG", "JPEG", "BMP")
ResizeMode = Literal["pad", "crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("pad", "crop", "stretch")
MAX_JPEG_SCANS = 64  # libjpeg's progressive presets use 10; each scan re-walks the whole image
DECODE_WORK_PER_PIXEL = 12  # pixels x scans allowed per pixel of a max_side^2 frame
LIGHT_WORK = 1 << 25  # pixels x scans (~30 ms): decoded on the shared pool; more goes on the heavy lane


class ImageError(ClientError):
    """A frame that cannot be used; the message names what was wrong and what is expected."""


@dataclass(frozen=True)
class EncodedFrame:
    """A frame as it came off the TCP port: payload bytes plus the header's size hints."""

    data: bytes
    width: int | None = None
    height: int | None = None


@dataclass
class PendingDecode:
    """An encoded image whose header passed every check, to be decoded on the heavy lane."""

    image: Image.Image
    work: int
    max_side: int

    def decode(self) -> np.ndarray:
        return _load(self.image, self.max_side)


def bmp_total_size(probe: bytes) -> int | None:
    """Size in bytes of the BMP file whose first BMP_PROBE_BYTES bytes are `probe`, or None.

    Uses the file header's bfSize; when a writer left it 0, computes it from the DIB header
    (offset + padded rows). None means "not a plausible BMP header" (then the bytes are raw RGB);
    ImageError means a BMP header whose bfSize cannot be right (under its own pixel-data offset).
    """
    if len(probe) < BMP_PROBE_BYTES or probe[:2] != b"BM":
        return None
    bf_size, reserved, off_bits, dib_size = struct.unpack_from("<IIII", probe, 2)
    if reserved != 0 or dib_size not in (12, 40, 52, 56, 64, 108, 124) or off_bits < 14 + dib_size:
        return None
    if bf_size:
        if bf_size < off_bits:
            raise ImageError(f"BMP header says the file is {bf_size} bytes, less than its pixel-data offset "
                             f"{off_bits}; expected the file's size (or 0)")
        return bf_size
    if dib_size == 12:
        width, height, _planes, bpp = struct.unpack_from("<HHHH", probe, 18)
    else:
        width, height, _planes, bpp = struct.unpack_from("<iiHH", probe, 18)
    if width <= 0 or height == 0 or bpp not in (1, 4, 8, 16, 24, 32):
        return None
    stride = (width * bpp + 31) // 32 * 4
    return off_bits + stride * abs(height)


def is_encoded(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:2] == b"BM"


def _open_encoded(data: bytes, max_side: int) -> PendingDecode:
    """Read an encoded image's header only, and refuse it before decoding if it is over a limit."""
    try:
        img = Image.open(io.BytesIO(data), formats=ENCODED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageError(f"image is too large: the limit is {max_side}x{max_side} (its header claims more "
                         f"than {Image.MAX_IMAGE_PIXELS or 0:,} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise ImageError(f"could not decode the {len(data)}-byte payload as PNG, JPEG or BMP "
                         f"({type(exc).__name__}: {describe(str(exc))})") from None
    check_size(img.width, img.height, max_side)
    scans = data.count(b"\xff\xda") if img.format == "JPEG" else 1  # SOS markers (0xFF is stuffed in scans)
    if scans > MAX_JPEG_SCANS:
        raise ImageError(f"JPEG has {scans} scans; the limit is {MAX_JPEG_SCANS} (a progressive JPEG "
                         "usually has 10)")
    work = img.width * img.height * max(scans, 1)
    if work > DECODE_WORK_PER_PIXEL * max_side * max_side:
        raise ImageError(f"{img.width}x{img.height} JPEG with {scans} scans is too much work to decode; "
                         f"at this size the limit is {DECODE_WORK_PER_PIXEL * max_side**2 // (img.width * img.height)}"
                         " scans")
    return PendingDecode(img, work, max_side)


def _load(img: Image.Image, max_side: int) -> np.ndarray:
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data, in any of Pillow's ways
        raise ImageError(f"could not decode the {img.format} image ({type(exc).__name__}: "
                         f"{describe(str(exc))})") from None
    return to_rgb_array(img, max_side)


def decode_payload(frame: EncodedFrame, max_side: int) -> np.ndarray | PendingDecode:
    """TCP payload -> H x W x 3 uint8 RGB (raw RGB by width/height or 256x256, else PNG/JPEG/BMP);
    an encoded image over LIGHT_WORK comes back undecoded, as a PendingDecode."""
    data, width, height = frame.data, frame.width, frame.height
    if (width is None) != (height is None):
        raise ImageError("give both 'width' and 'height' (raw RGB size) or neither")
    if width is not None and height is not None:
        check_size(width, height, max_side)
        if len(data) == width * height * 3:
            return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    if is_encoded(data):
        pending = _open_encoded(data, max_side)
        return pending if pending.work > LIGHT_WORK else pending.decode()
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


def prepare_frame(image: Any, max_side: int) -> np.ndarray | PendingDecode:
    """Any frame a frontend hands over -> RGB array (checked by nitrogen.frames), or a PendingDecode."""
    if isinstance(image, EncodedFrame):
        return decode_payload(image, max_side)
    if isinstance(image, PickledImage):
        image = image.to_pil(max_side)
    return to_rgb_array(image, max_side)


def frame_to_rgb(image: Any, max_side: int) -> np.ndarray:
    """prepare_frame, heavy images decoded too: for callers outside the request path (recording, tests)."""
    prepared = prepare_frame(image, max_side)
    return prepared.decode() if isinstance(prepared, PendingDecode) else prepared


def decode_frame(frame: EncodedFrame, max_side: int) -> np.ndarray:
    """A TCP payload -> H x W x 3 uint8 RGB, however heavy (see decode_payload)."""
    return frame_to_rgb(frame, max_side)


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
    raise ImageError(f"resize_mode {describe(mode)} is not one of {', '.join(RESIZE_MODES)}")


def model_view(rgb: np.ndarray, resize_mode: str, side: int = RAW_SIDE) -> np.ndarray:
    """The side x side frame the model saw: the client's resize_mode, then the model's own resize (for
    what shows it afterwards, the recording and the live view; never on the request path)."""
    from nitrogen.preprocess import resize_rgb  # loads torch: the server has it already

    return resize_rgb(np.ascontiguousarray(apply_resize_mode(rgb, resize_mode)), side)


# ---- pickled PIL images (ZeroMQ) ----------------------------------------------------------------------

PIL_MODES = {"1": 0, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "RGBA": 4, "RGBX": 4}  # bytes per pixel
MAX_PALETTE = 768


class PickledImage:
    """Inert stand-in for a pickled PIL image; holds Pillow's pickled state [info, mode, size, palette, data].

    Never rebuilt by Pillow's own __setstate__ (which allocates whatever size the pickle claims):
    `to_pil` checks mode, size, palette and data length against the limits first.
    """

    DESCRIPTION = "<PIL image>"
    state: list[Any] = []  # noqa: RUF012 - replaced, never mutated; NEWOBJ skips __init__

    def __init__(self, *_args: Any) -> None:
        self.state = []

    def __setstate__(self, state: Any) -> None:
        self.state = list(state) if isinstance(state, (list, tuple)) else []

    @property
    def nbytes(self) -> int:
        """Bytes it holds (pixel data, palette, info blobs): what a cache of frames counts."""
        total = 0
        for part in self.state:
            if isinstance(part, (bytes, bytearray)):
                total += len(part)
            elif isinstance(part, dict):
                total += sum(len(v) for v in part.values() if isinstance(v, (bytes, bytearray)))
        return total

    def to_pil(self, max_side: int) -> Image.Image:
        """Rebuild the image after checking mode, size, palette and data length."""
        if len(self.state) < 5:
            raise ImageError("'image' is a pickled PIL image without pixel data; expected "
                           "PIL.Image.Image's own pickled state")
        _info, mode, size, palette, data = self.state[:5]
        if mode not in PIL_MODES:
            raise ImageError(f"'image' is a PIL image of mode {describe(mode)}; expected one of "
                           f"{', '.join(PIL_MODES)}")
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(type(v) is int for v in size)):
            raise ImageError(f"'image' PIL size is {describe(size)}; expected (width, height)")
        width, height = size
        check_size(width, height, max_side)
        need = (width + 7) // 8 * height if mode == "1" else width * height * PIL_MODES[mode]
        if not isinstance(data, (bytes, bytearray)) or len(data) != need:
            got = f"{len(data)} bytes" if isinstance(data, (bytes, bytearray)) else describe(data)
            raise ImageError(f"'image' PIL {mode} {width}x{height} pixel data is {got}; expected "
                           f"exactly {need} bytes")
        if palette is not None and mode in ("P", "PA") and not (
                isinstance(palette, (list, tuple, bytes, bytearray)) and len(palette) <= MAX_PALETTE
                and len(palette) % 3 == 0 and all(type(v) is int and 0 <= v <= 255 for v in palette)):
            raise ImageError(f"'image' PIL palette is {describe(palette)}; expected at most 256 "
                           "RGB triples of integers 0-255")
        img = Image.frombytes(mode, (width, height), bytes(data))
        if mode in ("P", "PA") and palette:
            img.putpalette(bytes(palette), "RGB")
        return img


