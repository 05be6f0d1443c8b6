"""Hostile and broken requests for /segment_file and /segment, as hypothesis strategies.

Each case is a :class:`Case`: an endpoint, how to send it, and what may come back. Used by
``tests/test_fuzz.py`` (a few hundred cases on every CI run) and ``python -m tests.reliability``
(thousands, counted in docs/reliability.md).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
from hypothesis import strategies as st
from PIL import Image

__all__ = ["Case", "cases", "send"]

IMAGE = "<valid image here>"  # placeholder in option cases, replaced by a valid image


@dataclass
class Case:
    kind: str
    endpoint: str  # "file" (multipart /segment_file) or "json" (/segment)
    payload: Any  # bytes for "file"; a JSON-able object or raw bytes for "json"
    fields: dict[str, str] = field(default_factory=dict)
    ok_allowed: bool = False  # a valid (if odd) image may be answered 200


def send(client: Any, case: Case) -> Any:
    if case.endpoint == "file":
        data = {"file": (io.BytesIO(case.payload), "upload.bin"), **case.fields}
        return client.post("/segment_file", data=data, content_type="multipart/form-data")
    body = case.payload if isinstance(case.payload, bytes | str) else json.dumps(case.payload)
    return client.post("/segment", data=body, content_type="application/json")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, "JPEG")
    return buf.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (valid CRCs), followed by a tiny data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gif(frames: int) -> bytes:
    images = [Image.fromarray(np.full((32, 32), 40 * i, np.uint8)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:])
    return buf.getvalue()


_small = st.integers(1, 48)
_arrays = st.builds(
    lambda h, w, seed: np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8),
    _small,
    _small,
    st.integers(0, 10**6),
)

# Valid images of odd kinds: a 200 with few or no droplets is a fine answer, a 5xx is not.
_odd_images = st.one_of(
    st.builds(lambda a: Case("tiny png", "file", _png(a), ok_allowed=True), _arrays),
    st.builds(lambda: Case("1x1 png", "file", _png(np.zeros((1, 1), np.uint8)), ok_allowed=True)),
    st.builds(lambda a: Case("16-bit tiff", "file", _tiff(a.astype(np.uint16) * 257), ok_allowed=True), _arrays),
    st.builds(lambda a: Case("float tiff", "file", _tiff(a.astype(np.float32) / 255), ok_allowed=True), _arrays),
    st.builds(
        lambda a: Case(
            "float tiff with nan", "file", _tiff(np.where(a > 128, np.nan, a).astype(np.float32)), ok_allowed=True
        ),
        _arrays,
    ),
    st.builds(lambda a: Case("cmyk jpeg", "file", _jpeg(a, "CMYK"), ok_allowed=True), _arrays),
    st.builds(lambda n: Case("animated gif", "file", _gif(n), ok_allowed=True), st.integers(1, 4)),
    st.builds(lambda a: Case("5-d tiff", "file", _tiff(a.reshape(1, 1, 1, *a.shape)), ok_allowed=True), _arrays),
)

_broken_images = st.one_of(
    st.builds(lambda b: Case("random bytes", "file", b), st.binary(min_size=0, max_size=2048)),
    st.builds(lambda: Case("empty file", "file", b"")),
    st.builds(
        lambda a, cut: Case("truncated png", "file", _png(a)[: max(1, int(len(_png(a)) * cut))]),
        _arrays,
        st.floats(0, 0.95),
    ),
    st.builds(
        lambda a, cut: Case("truncated jpeg", "file", _jpeg(a)[: max(1, int(len(_jpeg(a)) * cut))]),
        _arrays,
        st.floats(0, 0.95),
    ),
    st.builds(
        lambda a, cut: Case("truncated tiff", "file", _tiff(a)[: max(1, int(len(_tiff(a)) * cut))]),
        _arrays,
        st.floats(0, 0.9),
    ),
    st.builds(
        lambda w, h: Case("decompression bomb header", "file", _png_header(w, h)),
        st.integers(20_000, 2**31 - 1),
        st.integers(20_000, 2**31 - 1),
    ),
    st.builds(lambda w: Case("zero-size header", "file", _png_header(w, 0)), st.integers(0, 5000)),
    st.builds(lambda b: Case("png magic then junk", "file", b"\x89PNG\r\n\x1a\n" + b), st.binary(max_size=512)),
)

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
_bad_numbers = st.one_of(
    st.just("NaN"),
    st.just("Infinity"),
    st.just("-Infinity"),
    st.just("1e999"),
    st.floats(max_value=-1e-9),
    st.text(max_size=12),
    st.just([]),
    st.just({}),
)
_filter_keys = st.sampled_from(
    ["diameter_min", "diameter_max", "area_min", "area_max", "circularity_min", "intensity_min", "units", "bogus"]
)

# Not blank (blank means "the default") and not a valid choice.
_VALID_CHOICES = {
    "auto",
    "sam",
    "classical",
    "grid",
    "json",
    "csv",
    "labels",
    "overlay",
    "coco",
    "default",
    "rim",
    "bright",
    "dark",
}


def _json_object_or_null(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return value is None or isinstance(value, dict)


_word = st.text(min_size=1, max_size=12).filter(lambda t: t.strip() and t.strip().lower() not in _VALID_CHOICES)

_bad_options = st.one_of(
    st.builds(
        lambda k, v: Case("filters with bad values", "file", None, {"filters": json.dumps({k: v})}),
        _filter_keys,
        _bad_numbers,
    ),
    st.builds(
        lambda t: Case("filters not json", "file", None, {"filters": t}),
        # Blank, "null" and "{}" mean no filters and are accepted: only text that is not a JSON object.
        st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and not _json_object_or_null(t)),
    ),
    st.builds(
        lambda v: Case("um_per_px bad", "file", None, {"um_per_px": v}),
        st.sampled_from(["nan", "inf", "-1", "0", "abc", "1e400", "-inf"]),
    ),
    st.builds(
        lambda k, v: Case("unknown field", "file", None, {k: v}),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
            lambda k: k not in ("filters", "preset", "segmenter", "um_per_px", "format", "appearance", "file")
        ),
        st.text(max_size=10),
    ),
    st.builds(lambda v: Case("bad segmenter", "file", None, {"segmenter": v}), _word),
    st.builds(lambda v: Case("bad preset", "file", None, {"preset": v}), _word),
    st.builds(lambda v: Case("bad format", "file", None, {"format": v}), _word),
)

_bad_json = st.one_of(
    st.builds(lambda b: Case("malformed json", "json", b), st.binary(max_size=256)),
    st.builds(lambda d: Case("deeply nested json", "json", "[" * d + "]" * d), st.integers(500, 200_000)),
    st.builds(
        lambda d: Case("deeply nested object", "json", '{"image":' * d + "1" + "}" * d), st.integers(500, 100_000)
    ),
    st.builds(
        lambda v: Case("json not an object", "json", v), st.one_of(_json_scalars, st.lists(_json_scalars, max_size=4))
    ),
    st.builds(
        lambda k, v: Case("wrong json keys", "json", {k: v}),
        st.text(max_size=10).filter(lambda k: k != "image"),
        _json_scalars,
    ),
    st.builds(lambda v: Case("image not base64", "json", {"image": v}), st.one_of(_json_scalars, st.text(max_size=64))),
    st.builds(
        lambda b: Case("base64 of junk", "json", {"image": base64.b64encode(b).decode()}),
        st.binary(min_size=1, max_size=512),
    ),
    st.builds(
        lambda k, v: Case("json filters with bad values", "json", {"image": IMAGE, "filters": {k: v}}),
        _filter_keys,
        _bad_numbers,
    ),
)


def _with_image(case: Case, png: bytes) -> Case:
    """Option cases carry a valid image, so that only the options are wrong."""
    if case.endpoint == "file" and case.payload is None:
        case.payload = png
    if case.endpoint == "json" and isinstance(case.payload, dict) and case.payload.get("image") == IMAGE:
        case.payload["image"] = base64.b64encode(png).decode()
    return case


def cases(valid_png: bytes) -> st.SearchStrategy[Case]:
    """Every kind of case; option cases get ``valid_png`` as their image."""
    return st.one_of(_odd_images, _broken_images, _bad_options, _bad_json).map(lambda c: _with_image(c, valid_png))
