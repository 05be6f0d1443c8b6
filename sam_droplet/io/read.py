"""Read images: files, uploaded bytes and arrays become one :class:`ImageData`.

:func:`read_image` takes a path, the bytes of a file or a NumPy array; :func:`read_channel` one
channel of a multi-channel file. The file type is sniffed from the bytes (python-magic), never taken
from the file name. The pixel count is checked from the header before any pixel is decoded, so a
decompression bomb costs a few bytes of parsing. Intensities are kept as they are in the file
(8 bit, 16 bit or float): droplets are measured on these original values, and only the display and
SAM copies are scaled to 8 bit.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageTooLarge, InvalidImage, InvalidOptions, UnsupportedImageType

__all__ = [
    "IMAGE_SUFFIXES",
    "SUPPORTED_TYPES",
    "ImageData",
    "ImageHeader",
    "ImageSource",
    "decode_channel",
    "decode_image",
    "probe_image",
    "read_channel",
    "read_image",
    "sniff_type",
]

# MIME type (as libmagic names it) -> format name.
SUPPORTED_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/tiff": "TIFF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/webp": "WEBP",
}
# File name suffixes of the types above, for finding images in folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_SIDE = 16  # px; smaller pictures cannot hold a droplet worth measuring

# RGB -> luminance weights (ITU-R BT.601), the intensity droplets are measured on.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class ImageData:
    """An image ready for the pipeline, read from a file, uploaded bytes or an array.

    Attributes:
        pixels: HxW (gray) or HxWx3 (RGB) array in the file's own dtype and values (uint8, uint16 or
            float32); an alpha channel is removed.
        format: PNG, JPEG, TIFF, BMP or WEBP for files; ``array`` for arrays.
        bit_depth: bits per sample (8, 16 or 32).
        channels: samples per pixel in the source, alpha included (1 to 4).
        sha256: hex digest of the file's bytes (for an array: of its shape, dtype and values; for
            one channel of a multi-channel file: of the file's digest and the channel's index).
        um_per_px: the pixel size the file records (TIFF: OME ``PhysicalSizeX``, ImageJ's unit and
            resolution, or a resolution in centimetres), or None.
    """

    pixels: np.ndarray
    format: str
    bit_depth: int
    channels: int
    sha256: str
    um_per_px: float | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @cached_property
    def gray(self) -> np.ndarray:
        """Intensity in the file's units (float32, HxW): the gray values, or RGB luminance."""
        if self.pixels.ndim == 2:
            return self.pixels.astype(np.float32, copy=False)
        return (self.pixels.astype(np.float32) @ _LUMA.astype(np.float32)).astype(np.float32)

    @cached_property
    def rgb8(self) -> np.ndarray:
        """8-bit RGB copy (HxWx3) for display and for SAM; deeper images are stretched to 0.1-99.9 %."""
        px = self.pixels
        if px.dtype != np.uint8:
            finite = px[np.isfinite(px)] if px.dtype.kind == "f" else px
            sample = finite.ravel()[:: max(1, finite.size // 1_000_000)]
            lo, hi = (float(v) for v in np.percentile(sample, [0.1, 99.9]))
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            px = np.clip((px.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)
        if px.ndim == 2:
            px = np.repeat(px[:, :, None], 3, axis=2)
        return np.ascontiguousarray(px)

    def info(self) -> dict:
        """JSON description of the image."""
        return {
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "bit_depth": self.bit_depth,
            "format": self.format,
            "sha256": self.sha256,
            "intensity": "gray" if self.pixels.ndim == 2 else "luminance",
        }


ImageSource = str | os.PathLike | bytes | np.ndarray | ImageData


def read_image(source: ImageSource, max_pixels: int | None = None) -> ImageData:
    """An image from a file path, a file's bytes, a NumPy array, or an :class:`ImageData` (as is).

    Arrays are HxW (gray) or HxWx3 (RGB; HxWx4 loses its alpha), of uint8, uint16, another integer
    type (kept as uint16 when its values fit, else float32), bool or float; their values are
    measured as they are.

    Args:
        source: what to read.
        max_pixels: largest accepted width * height (files are checked from their header); None
            for no limit of ours (Pillow still refuses absurd headers).

    Raises:
        InvalidImage: not a readable image, NaN or infinite values, or smaller than 16x16.
        UnsupportedImageType, ImageTooLarge: as :func:`decode_image`.
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(source, ImageData):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return decode_image(Path(source).read_bytes(), max_pixels)
    raise TypeError(f"cannot read an image from {type(source).__name__}: give a path, bytes or a NumPy array")


def read_channel(source: str | os.PathLike | bytes, index: int, max_pixels: int | None = None) -> ImageData:
    """One channel of a multi-channel file (a page of a multi-page TIFF, or a colour sample) as a
    gray image; see :func:`decode_channel`."""
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
    return decode_channel(data, index, max_pixels)


def _from_array(array: np.ndarray, max_pixels: int | None) -> ImageData:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InvalidImage(f"an image array must be HxW (gray) or HxWx3 (RGB), got shape {arr.shape}")
    channels = 1 if arr.ndim == 2 else int(arr.shape[2])
    if channels == 4:
        arr = arr[..., :3]
    h, w = arr.shape[:2]
    if max_pixels is not None:
        _check_size(w, h, max_pixels)
    if arr.dtype == np.bool_:
        arr, depth = arr.astype(np.uint8) * 255, 8
    elif arr.dtype == np.uint8:
        depth = 8
    elif arr.dtype == np.uint16:
        depth = 16
    elif arr.dtype.kind in "iu":
        fits = arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 65535
        arr, depth = (arr.astype(np.uint16), 16) if fits else (arr.astype(np.float32), 32)
    elif arr.dtype.kind == "f":
        arr, depth = arr.astype(np.float32), 32
    else:
        raise InvalidImage(f"an image array must hold numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidImage("the image has NaN or infinite pixel values")
    if min(h, w) < MIN_SIDE:
        raise InvalidImage(f"the image is {w}x{h} pixels: at least {MIN_SIDE}x{MIN_SIDE} is needed")
    digest = hashlib.sha256(f"{arr.shape}{arr.dtype}".encode() + arr.tobytes()).hexdigest()
    return ImageData(pixels=arr, format="array", bit_depth=depth, channels=channels, sha256=digest)


def sniff_type(data: bytes) -> str:
    """MIME type of ``data`` from its content (libmagic)."""
    import magic

    return magic.from_buffer(data[:4096], mime=True)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding a pixel (:func:`probe_image`).

    Attributes:
        format: PNG, JPEG, TIFF, BMP or WEBP.
        width, height: the picture's size in pixels (of the first page of a TIFF).
        samples: values per pixel as stored, every extra dimension of a TIFF page included (a
            3-D TIFF of depth 256 counts 256 times).
        bytes_per_sample: 1, 2, 4 or 8.
        pages: pictures in the file (TIFF pages; 1 for the other formats).
    """

    format: str
    width: int
    height: int
    samples: int
    bytes_per_sample: int
    pages: int = 1

    def decoded_bytes(self, pages_read: int = 1) -> int:
        """Memory that decoding ``pages_read`` pages takes at its peak: the decoder's buffer and
        the array it becomes (converted to RGB, 16 bit or float32) side by side."""
        return 2 * self.width * self.height * self.samples * max(self.bytes_per_sample, 1) * pages_read


def probe_image(data: bytes, max_pixels: int | None = None) -> ImageHeader:
    """The header of an image file: size, samples and pages, without decoding pixels.

    Raises:
        InvalidImage: empty, or the header cannot be read.
        UnsupportedImageType: not PNG, JPEG, TIFF, BMP or WebP.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    header = _probe(data)
    _check_size(header.width, header.height, max_pixels)
    return header


def _probe(data: bytes) -> ImageHeader:
    if not data:
        raise InvalidImage("the uploaded file is empty")
    fmt = _format_of(data)
    if fmt == "TIFF":
        import tifffile

        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if not tif.pages:
                    raise InvalidImage("the TIFF file has no image")
                page = tif.pages[0]
                shape = dict(zip(page.axes, page.shape, strict=False))
                width, height = int(shape.get("X", 0)), int(shape.get("Y", 0))
                values = int(np.prod(page.shape, dtype=np.int64))
                return ImageHeader(
                    fmt, width, height, max(1, values // max(width * height, 1)), page.dtype.itemsize, len(tif.pages)
                )
        except InvalidImage:
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            raise InvalidImage(f"the TIFF file cannot be read (corrupt or truncated): {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
            width, height, mode = im.width, im.height, im.mode
    except Image.DecompressionBombError:
        raise ImageTooLarge("the image header declares more pixels than Pillow will open") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise InvalidImage(f"the {fmt} file cannot be read (corrupt or truncated): {exc}") from None
    if fmt == "PNG" and data[24:25] == b"\x10":
        per_sample = 2
    elif mode.startswith(("I", "F")):
        per_sample = 2 if mode.startswith("I;16") else 4
    else:
        per_sample = 1
    # Palette pictures become RGB; the others keep their bands (alpha is dropped after decoding).
    if mode in ("P", "PA"):
        samples = 3
    elif mode.startswith("I;16"):
        samples = 1
    else:
        try:
            samples = Image.getmodebands(mode)
        except (KeyError, ValueError):
            samples = 4
    return ImageHeader(fmt, width, height, samples, per_sample)


def _format_of(data: bytes) -> str:
    mime = sniff_type(data)
    fmt = SUPPORTED_TYPES.get(mime)
    if fmt is None:
        accepted = "PNG, JPEG, TIFF, BMP, WebP"
        raise UnsupportedImageType(
            f"unsupported file type {mime!r}: send one of {accepted}",
            details={"detected": mime, "accepted": sorted(set(SUPPORTED_TYPES.values()))},
        )
    return fmt


def decode_image(data: bytes, max_pixels: int | None = None, page: int = 0) -> ImageData:
    """Decode and validate the bytes of an image file.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted width * height (None: no limit of ours).
        page: the page of a multi-page TIFF (other formats have one).

    Raises:
        InvalidImage: empty, corrupt or truncated data, or an image too small to analyse.
        UnsupportedImageType: not PNG, JPEG, TIFF, BMP or WebP.
        ImageTooLarge: more than ``max_pixels`` pixels (refused from the header).
        InvalidOptions: ``page`` is not a page of the TIFF.
    """
    if not data:
        raise InvalidImage("the uploaded file is empty")
    fmt = _format_of(data)
    digest = hashlib.sha256(data).hexdigest()
    um_per_px = None
    if fmt == "TIFF":
        pixels, bit_depth, channels, um_per_px = _decode_tiff(data, max_pixels, page)
    else:
        pixels, bit_depth, channels = _decode_pillow(data, fmt, max_pixels)
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise InvalidImage("the image has NaN or infinite pixel values")
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InvalidImage(f"the image is {w}x{h} pixels: at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return ImageData(pixels, fmt, bit_depth, channels, digest, um_per_px)


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImage(f"the image header gives an invalid size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels: "
            f"the limit is {max_pixels:,} pixels (MAX_IMAGE_PIXELS)",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )


def _decode_pillow(data: bytes, fmt: str, max_pixels: int | None) -> tuple[np.ndarray, int, int]:
    try:
        with warnings.catch_warnings():
            # Our own limit is checked below; Pillow's bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
            _check_size(im.width, im.height, max_pixels)
            png_16bit_color = fmt == "PNG" and data[24:25] == b"\x10" and data[25:26] in (b"\x02", b"\x06")
            if png_16bit_color:
                # Pillow reads 16-bit colour PNGs as 8 bit; OpenCV keeps all 16.
                return _decode_png16_color(data, im)
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            im = ImageOps.exif_transpose(im) if orientation != 1 else im
    except (ImageTooLarge, InvalidImage):
        raise
    except Image.DecompressionBombError:
        # Pillow refuses absurd headers itself before we see the size.
        raise ImageTooLarge(
            "the image header declares more pixels than Pillow will open"
            + (f": the limit is {max_pixels:,} pixels (MAX_IMAGE_PIXELS)" if max_pixels is not None else ""),
            details={"max_pixels": max_pixels} if max_pixels is not None else None,
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise InvalidImage(f"the {fmt} file cannot be decoded (corrupt or truncated): {exc}") from None
    return _from_pillow(im)


def _from_pillow(im: Image.Image) -> tuple[np.ndarray, int, int]:
    """Array, bit depth and channel count of a loaded Pillow image (alpha dropped)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L")), 8, 1
    if mode in ("L", "LA", "PA"):
        arr = np.asarray(im.convert("LA") if mode != "L" else im)
        return (arr[..., 0].copy() if arr.ndim == 3 else arr), 8, (2 if mode != "L" else 1)
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        channels = 4 if mode == "RGBA" else 3
        return np.asarray(im.convert("RGB")), 8, channels
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), 16, 1
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16), 16, 1
        return arr.astype(np.float32), 32, 1
    if mode == "F":
        return np.asarray(im).astype(np.float32), 32, 1
    raise InvalidImage(f"unsupported pixel layout {mode!r}")


def _decode_png16_color(data: bytes, im: Image.Image) -> tuple[np.ndarray, int, int]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise InvalidImage("the PNG file cannot be decoded (corrupt or truncated)")
    channels = arr.shape[2]
    rgb = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)
    return _orient(rgb, im.getexif().get(0x0112, 1)), 16, channels


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxW[xC] array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


def decode_channel(data: bytes, index: int, max_pixels: int | None = None) -> ImageData:
    """One channel of a multi-channel image as a gray image, in the file's units.

    Channels are the pages of a multi-page TIFF (one picture per page, same size), else the samples
    of one picture (the colour channels of an RGB PNG or TIFF, the planes of a planar TIFF).

    Raises:
        InvalidOptions: ``index`` is not a channel of the file.
        InvalidImage, UnsupportedImageType, ImageTooLarge: as :func:`decode_image`.
    """
    if data and SUPPORTED_TYPES.get(sniff_type(data)) == "TIFF" and _tiff_page_count(data) > 1:
        image = decode_image(data, max_pixels, page=index)
        if image.pixels.ndim != 2:
            raise InvalidImage(f"TIFF page {index} is not a 2-D picture (shape {image.pixels.shape})")
        return replace(image, sha256=_channel_digest(image.sha256, index))
    image = decode_image(data, max_pixels)
    n = 1 if image.pixels.ndim == 2 else image.pixels.shape[2]
    if not 0 <= index < n:
        raise InvalidOptions(f"channel {index} does not exist: the image has {n} channel(s), numbered from 0")
    plane = image.pixels if image.pixels.ndim == 2 else np.ascontiguousarray(image.pixels[..., index])
    return ImageData(plane, image.format, image.bit_depth, 1, _channel_digest(image.sha256, index), image.um_per_px)


def _channel_digest(file_digest: str, index: int) -> str:
    """The digest that names one channel of a file: the channels of one file are different images."""
    return hashlib.sha256(f"{file_digest}:channel={index}".encode()).hexdigest()


def _tiff_page_count(data: bytes) -> int:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return len(tif.pages)
    except Exception:  # damaged: decode_image reports it
        return 0


# Micrometres per unit of the length units microscope software writes into TIFF metadata.
_UM_PER_UNIT = {
    "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6,
    "meter": 1e6, "å": 1e-4, "angstrom": 1e-4,
}  # fmt: skip


def _tiff_pixel_size(tif: object, page: object) -> float | None:
    """Micrometres per pixel (along x) recorded in a TIFF, or None.

    In order: OME-XML ``PhysicalSizeX`` (with ``PhysicalSizeXUnit``, default um); ImageJ's
    ``unit`` with the XResolution tag (pixels per unit); a ResolutionUnit of centimetres. A
    resolution in inches is a printing resolution (72 or 300 dpi by default), not a scale: ignored.
    """
    import xml.etree.ElementTree as ET

    def positive(value: float) -> float | None:
        return value if value > 0 and np.isfinite(value) else None

    if getattr(tif, "is_ome", False) and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
        except ET.ParseError:
            root = None
        pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None) if root is not None else None
        if pixels is not None and pixels.get("PhysicalSizeX"):
            factor = _UM_PER_UNIT.get(pixels.get("PhysicalSizeXUnit", "µm").strip().lower())
            try:
                size = float(pixels.get("PhysicalSizeX"))
            except ValueError:
                size = float("nan")
            if factor is not None:
                return positive(size * factor)
    tags = page.tags
    if "XResolution" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    if not numerator or not denominator:
        return None
    units_per_px = denominator / numerator
    metadata = getattr(tif, "imagej_metadata", None) or {}
    unit = str(metadata.get("unit", "")).strip().lower()
    if unit in _UM_PER_UNIT:
        return positive(units_per_px * _UM_PER_UNIT[unit])
    if "ResolutionUnit" in tags and int(tags["ResolutionUnit"].value) == 3:  # centimetres
        return positive(units_per_px * 1e4)
    return None


def _decode_tiff(data: bytes, max_pixels: int | None, page_index: int = 0) -> tuple[np.ndarray, int, int, float | None]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.pages:
                raise InvalidImage("the TIFF file has no image")
            if not 0 <= page_index < len(tif.pages):
                raise InvalidOptions(
                    f"channel {page_index} does not exist: the TIFF has {len(tif.pages)} pages, numbered from 0"
                )
            page = tif.pages[page_index]
            axes = page.axes
            shape = dict(zip(axes, page.shape, strict=False))
            _check_size(int(shape.get("X", 0)), int(shape.get("Y", 0)), max_pixels)
            # Refused from the header: a volume (depth, time, ...) or more than 4 samples per pixel
            # would be decoded whole, many times the picture's size, before being turned away.
            extra = {a: n for a, n in shape.items() if a not in "YXS" and n > 1}
            if extra or shape.get("S", 1) > 4:
                raise InvalidImage(
                    f"unsupported TIFF layout {axes} with shape {page.shape}: send a 2-D gray or RGB(A) picture "
                    "(save each plane of a stack as a page)"
                )
            arr = page.asarray()
            orientation = int(page.tags.get("Orientation").value) if "Orientation" in page.tags else 1
            um_per_px = _tiff_pixel_size(tif, page)
    except (ImageTooLarge, InvalidImage, InvalidOptions):
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InvalidImage(f"the TIFF file cannot be decoded (corrupt or truncated): {exc}") from None
    # Bring samples last: tifffile gives YX, YXS, or SYX for planar files.
    if arr.ndim == 3 and axes.startswith("S"):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] > 4):
        raise InvalidImage(f"unsupported TIFF layout {axes} with shape {arr.shape}: send a 2-D gray or RGB(A) image")
    channels = 1 if arr.ndim == 2 else int(arr.shape[2])
    if channels == 2:
        arr = arr[..., 0]
    elif channels == 4:
        arr = arr[..., :3]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        depth = 8
    elif arr.dtype == np.uint16:
        depth = 16
    else:
        arr = arr.astype(np.float32)
        depth = 32
    return _orient(arr, orientation), depth, channels, um_per_px
