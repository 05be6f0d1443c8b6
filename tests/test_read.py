"""Decoding and validation of uploads: formats, bit depths, channels, orientation, hostile input."""

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_droplet.errors import ImageTooLarge, InvalidImage, UnsupportedImageType
from sam_droplet.io.read import decode_channel, decode_image
from sam_droplet.io.write import png_bytes

LIMIT = 10_000_000
RGB = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)


def encode(array, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "WEBP"])
def test_formats_rgb_and_gray(fmt):
    img = decode_image(encode(RGB, fmt), LIMIT)
    assert img.format == fmt and img.pixels.shape == (40, 56, 3) and img.pixels.dtype == np.uint8
    gray = decode_image(encode(RGB[..., 0], fmt), LIMIT)
    if fmt != "WEBP":  # WebP has no gray mode: Pillow stores gray as RGB
        assert gray.pixels.shape == (40, 56) and gray.channels == 1
    assert len(img.sha256) == 64 and img.rgb8.shape == (40, 56, 3)


def test_lossless_formats_keep_values():
    for fmt in ("PNG", "TIFF", "BMP"):
        assert np.array_equal(decode_image(encode(RGB, fmt), LIMIT).pixels, RGB)


def test_16bit_gray_png_and_tiff_keep_full_depth():
    g16 = (np.random.default_rng(1).random((40, 56)) * 65535).astype(np.uint16)
    png = decode_image(encode(g16, "PNG"), LIMIT)
    assert png.bit_depth == 16 and np.array_equal(png.pixels, g16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, g16)
    tif = decode_image(buf.getvalue(), LIMIT)
    assert tif.bit_depth == 16 and np.array_equal(tif.pixels, g16)
    # Measurements use these values; the gray view keeps them.
    assert tif.gray.max() == g16.max()
    assert tif.rgb8.dtype == np.uint8


def test_compressed_tiffs_are_read():
    """LZW (what OpenCV and much acquisition software write), Deflate and PackBits TIFFs, 8 and 16
    bit: an LZW TIFF was refused as "corrupt or truncated" before the codecs were a dependency."""
    g16 = (np.random.default_rng(4).random((40, 56)) * 65535).astype(np.uint16)
    for pixels in (g16, (g16 >> 8).astype(np.uint8), RGB):
        ok, lzw = cv2.imencode(".tif", pixels[..., ::-1] if pixels.ndim == 3 else pixels)
        assert ok and np.array_equal(decode_image(lzw.tobytes(), LIMIT).pixels, pixels)
        for compression in ("zlib", "packbits"):
            buf = io.BytesIO()
            tifffile.imwrite(buf, pixels, compression=compression)
            assert np.array_equal(decode_image(buf.getvalue(), LIMIT).pixels, pixels), compression


def test_16bit_colour_png_and_planar_tiff():
    c16 = (np.random.default_rng(2).random((40, 56, 3)) * 65535).astype(np.uint16)
    _, png = cv2.imencode(".png", c16[..., ::-1])
    assert np.array_equal(decode_image(png.tobytes(), LIMIT).pixels, c16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.moveaxis(c16, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(decode_image(buf.getvalue(), LIMIT).pixels, c16)


def test_float_tiff_and_rgba():
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(3).random((40, 56)).astype(np.float32))
    img = decode_image(buf.getvalue(), LIMIT)
    assert img.pixels.dtype == np.float32 and img.bit_depth == 32
    rgba = decode_image(encode(np.dstack([RGB, RGB[..., :1]]), "PNG"), LIMIT)
    assert rgba.pixels.shape == (40, 56, 3) and rgba.channels == 4 and rgba.has_alpha
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((40, 56), np.nan, np.float32))
    with pytest.raises(InvalidImage, match="NaN"):
        decode_image(buf.getvalue(), LIMIT)


def test_exif_orientation_is_applied():
    im = Image.fromarray(RGB)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), LIMIT).pixels.shape == (56, 40, 3)


def test_cmyk_and_palette():
    assert decode_image(_cmyk(), LIMIT).pixels.shape == (40, 56, 3)
    palette = Image.fromarray(RGB).convert("P")
    buf = io.BytesIO()
    palette.save(buf, "PNG")
    assert decode_image(buf.getvalue(), LIMIT).pixels.shape == (40, 56, 3)


def _cmyk() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RGB).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"", InvalidImage, "empty"),
        (b"hello, this is text", UnsupportedImageType, "unsupported file type"),
        (encode(RGB, "GIF"), UnsupportedImageType, "image/gif"),
        (encode(RGB, "PNG")[:300], InvalidImage, "truncated"),
        (encode(RGB, "JPEG")[:300], InvalidImage, "truncated"),
        (b"II*\x00" + b"\x00" * 64, InvalidImage, "TIFF"),
        (encode(RGB[:1, :1], "PNG"), InvalidImage, "at least 16x16"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(data, error, message):
    with pytest.raises(error, match=message):
        decode_image(data, LIMIT)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [5000, 100_000])
def test_decompression_bomb_is_refused_from_the_header(side):
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="MAX_IMAGE_PIXELS"):
        decode_image(bomb, LIMIT)


def test_pixel_limit_counts_width_times_height():
    with pytest.raises(ImageTooLarge, match="56x40 = 2,240 pixels"):
        decode_image(encode(RGB, "PNG"), 2000)


@pytest.mark.parametrize(
    "write, expected",
    [
        ({"imagej": True, "resolution": (1 / 0.65, 1 / 0.65), "metadata": {"unit": "um"}}, 0.65),
        ({"imagej": True, "resolution": (1 / 0.65, 1 / 0.65), "metadata": {"unit": "micron"}}, 0.65),
        ({"imagej": True, "resolution": (1 / 650, 1 / 650), "metadata": {"unit": "nm"}}, 0.65),
        ({"ome": True, "metadata": {"PhysicalSizeX": 0.65, "PhysicalSizeXUnit": "µm"}}, 0.65),
        ({"resolution": (1 / 0.000065, 1 / 0.000065), "resolutionunit": "CENTIMETER"}, 0.65),
        ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),  # a printing resolution, not a scale
        ({"imagej": True, "metadata": {"unit": "pixel"}}, None),
        ({}, None),
    ],
)
def test_pixel_size_from_tiff_metadata(write, expected):
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64), np.uint16), **write)
    got = decode_image(buf.getvalue(), 10**8).um_per_px
    assert got == (pytest.approx(expected, rel=1e-4) if expected else None)


def test_an_imagej_tiff_with_a_pixel_size_is_calibrated_without_um_per_px(client, packed):
    import tifffile

    import sam_droplet as sd

    buf = io.BytesIO()
    tifffile.imwrite(buf, packed.image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    body = client.post("/segment_file", data={"file": (io.BytesIO(buf.getvalue()), "p.tif")}).get_json()
    assert body["calibration"] == {"um_per_px": 0.5, "source": "file"}
    d = body["droplets"][0]
    assert d["equivalent_diameter_um"] == pytest.approx(0.5 * d["equivalent_diameter_px"], rel=1e-4)
    assert body["summary"]["size"]["unit"] == "um" and body["filters_applied"]["units"] == "um"
    # The request's own value wins, and says so; a PNG has none.
    typed = client.post("/segment_file", data={"file": (io.BytesIO(buf.getvalue()), "p.tif"), "um_per_px": "1"})
    assert typed.get_json()["calibration"] == {"um_per_px": 1.0, "source": "request"}
    assert sd.segment(packed.image).as_dict(masks=False)["calibration"] == {"um_per_px": None, "source": "none"}


def test_probe_reads_the_header_only_and_counts_every_sample():
    from sam_droplet.io.read import probe_image

    header = probe_image(png_bytes(np.zeros((30, 40, 3), np.uint16)))
    assert (header.width, header.height, header.samples, header.bytes_per_sample) == (40, 30, 3, 2)
    buf = io.BytesIO()
    tile = np.zeros((16, 64, 64), np.uint8)
    tifffile.imwrite(
        buf, (tile for _ in range(4 * 16 * 16)), shape=(64, 1024, 1024), dtype=np.uint8, tile=(16, 64, 64),
        volumetric=True, compression="zlib", photometric="minisblack",
    )  # fmt: skip
    volume = probe_image(buf.getvalue())
    assert (volume.width, volume.height, volume.samples) == (1024, 1024, 64)
    assert volume.decoded_bytes() == 2 * 1024 * 1024 * 64
    # Refused from the header, before the 64 MB volume is decoded.
    with pytest.raises(InvalidImage, match="unsupported TIFF layout"):
        decode_image(buf.getvalue())


def test_channels_of_one_file_have_their_own_digests():
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    digests = {decode_channel(data, i).sha256 for i in range(3)}
    assert len(digests) == 3 and decode_image(data).sha256 not in digests
