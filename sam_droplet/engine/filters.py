"""Droplet filters and presets.

Filters never delete silently: every droplet a filter removes is returned with the first reason
that removed it, so a client can show it, and restore it, without segmenting again.

Lengths follow ``units``: pixels by default, micrometres when the request is calibrated
(``um_per_px``), unless ``units`` says otherwise. Areas are px^2 or um^2 accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import InvalidOptions
from .measure import Droplet

__all__ = [
    "DEFAULT_FILTERS",
    "FILTER_KEYS",
    "PRESETS",
    "FilterSpec",
    "Preset",
    "apply_filters",
    "choose_preset",
    "resolve_filters",
]

# key -> (kind, description). Kinds: number (finite, >= 0), fraction ([0, 1]), bool, and choices.
FILTER_KEYS: dict[str, tuple[str, str]] = {
    "area_min": ("number", "smallest area (px^2, or um^2 when units=um)"),
    "area_max": ("number", "largest area (px^2, or um^2 when units=um)"),
    "diameter_min": ("number", "smallest equivalent diameter (px, or um when units=um)"),
    "diameter_max": ("number", "largest equivalent diameter (px, or um when units=um)"),
    "circularity_min": ("fraction", "smallest circularity 4*pi*area/perimeter^2 (0 to 1)"),
    "mean_min": ("number", "smallest mean intensity (image units)"),
    "mean_max": ("number", "largest mean intensity (image units)"),
    "std_min": ("number", "smallest intensity standard deviation (image units)"),
    "std_max": ("number", "largest intensity standard deviation (image units)"),
    "min_edge_distance": ("number", "smallest distance to the image border (px, or um when units=um)"),
    "exclude_edge_touching": ("bool", "remove droplets that touch the image border"),
    "outliers": ("none|iqr|std", "remove diameter outliers: Tukey fences (iqr) or mean +- k*std (std)"),
    "outlier_factor": ("number", "fence factor k for outliers (default 1.5 for iqr, 3 for std)"),
    "units": ("px|um", "units of the length and area filters (default: um when calibrated, else px)"),
}

DEFAULT_FILTERS: dict[str, Any] = {"exclude_edge_touching": True, "circularity_min": 0.6, "outliers": "none"}


@dataclass(frozen=True)
class FilterSpec:
    """A validated set of filters; None means "no limit"."""

    area_min: float | None = None
    area_max: float | None = None
    diameter_min: float | None = None
    diameter_max: float | None = None
    circularity_min: float | None = None
    mean_min: float | None = None
    mean_max: float | None = None
    std_min: float | None = None
    std_max: float | None = None
    min_edge_distance: float | None = None
    exclude_edge_touching: bool = False
    outliers: str = "none"
    outlier_factor: float | None = None
    units: str = "px"

    def as_dict(self) -> dict[str, Any]:
        """The filters that are set (None limits left out), with their units."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Preset:
    """Named filters (and detection hints) for a kind of sample.

    Attributes:
        description: one line for the page and ``/defaults``.
        filters: the filter spec (see ``FILTER_KEYS``).
        appearance: detector cue (auto, rim, bright, dark).
        nested_droplets: report droplets seen through larger droplets; False makes what lies inside
            a droplet its content (cells, beads), not a droplet of its own.
        count_contents: count and measure the small objects inside each droplet in bright field
            (:mod:`sam_droplet.engine.contents`).
    """

    description: str
    filters: dict[str, Any]
    appearance: str = "auto"
    nested_droplets: bool = True
    count_contents: bool = False


PRESETS: dict[str, Preset] = {
    "auto": Preset(
        "Chosen from each image: a packed monolayer of one droplet size gets the monolayer's filters "
        "(and what lies inside its droplets is their content, as it is wherever small objects gather "
        "inside larger droplets far beyond chance), droplets brighter or darker than the "
        "background theirs, anything else the default's.",
        dict(DEFAULT_FILTERS),
    ),
    "default": Preset(
        "Whole droplets: drop those cut by the image border and clearly non-round objects.", dict(DEFAULT_FILTERS)
    ),
    "packed_monolayer": Preset(
        "Packed ddPCR-like monolayers: whole droplets, round, with merged droplets and satellites flagged as diameter outliers.",
        {**DEFAULT_FILTERS, "circularity_min": 0.75, "outliers": "iqr", "outlier_factor": 3.0},
        appearance="rim",
    ),
    "polydisperse": Preset(
        "Polydisperse emulsions: whole round droplets of any size; no outlier removal, a wide distribution is real.",
        {**DEFAULT_FILTERS, "circularity_min": 0.7},
    ),
    "droplets_with_contents": Preset(
        "Droplets carrying cells or beads: what lies inside a droplet is its content, counted per droplet, not a droplet of its own.",
        dict(DEFAULT_FILTERS),
        nested_droplets=False,
        count_contents=True,
    ),
    # Bright on dark are mostly gas bubbles in flow (background-subtracted), deformed by it: an
    # ellipse 4 times as long as wide has a circularity of 0.54, 5 times 0.45. 0.4 keeps those and
    # still drops streaks and lines. Generated bright bubbles, tuning seeds: 0.5, 0.4, 0.3 and no
    # limit tie (0.961 -> 0.963 against 0.6); held out: bubbles_gt 0.782 -> 0.789.
    "bright_droplets": Preset(
        "Droplets or bubbles brighter than the background (fluorescence, dark-field, background-subtracted "
        "bubbles); circularity >= 0.4, since bubbles in flow deform.",
        {**DEFAULT_FILTERS, "circularity_min": 0.4},
        appearance="bright",
    ),
    "dark_droplets": Preset(
        "Droplets darker than the background (absorbing or dyed droplets under bright-field).",
        dict(DEFAULT_FILTERS),
        appearance="dark",
    ),
    "complete_objects": Preset(
        "Only complete, well-separated round objects: at least 2 px from the border, circularity >= 0.8.",
        {
            "exclude_edge_touching": True,
            "min_edge_distance": 2,
            "circularity_min": 0.8,
            "outliers": "none",
            "units": "px",
        },
    ),
    "all_objects": Preset(
        "Everything that was segmented, unfiltered (useful with the grid segmenter for non-droplet objects).",
        {"exclude_edge_touching": False, "circularity_min": 0.0, "outliers": "none"},
    ),
}


def _invalid(message: str) -> InvalidOptions:
    return InvalidOptions(
        message,
        details={"accepted_keys": {k: f"{kind}: {desc}" for k, (kind, desc) in FILTER_KEYS.items()}},
    )


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"filter {key!r} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _invalid(f"filter {key!r} must be a finite number, got {value}")
    if value < 0:
        raise _invalid(f"filter {key!r} must not be negative, got {value}")
    return value


def _parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate keys and types of user filters; returns normalised values."""
    if not isinstance(raw, Mapping):
        raise _invalid(f"filters must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise _invalid(f"unknown filter key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(FILTER_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = FILTER_KEYS[key][0]
        if value is None:
            out[key] = None
        elif kind == "bool":
            if not isinstance(value, bool):
                raise _invalid(f"filter {key!r} must be true or false, got {value!r}")
            out[key] = value
        elif "|" in kind:
            choices = kind.split("|")
            if not isinstance(value, str) or value.lower() not in choices:
                raise _invalid(f"filter {key!r} must be one of {', '.join(choices)}, got {value!r}")
            out[key] = value.lower()
        else:
            number = _number(key, value)
            if kind == "fraction" and number > 1:
                raise _invalid(f"filter {key!r} must be between 0 and 1, got {number}")
            if key == "outlier_factor" and number == 0:
                raise _invalid("filter 'outlier_factor' must be greater than 0")
            out[key] = number
    return out


def resolve_filters(filters: Mapping[str, Any] | None, preset: str | None, calibrated: bool) -> tuple[FilterSpec, str]:
    """Combine a preset (``default`` when None) with user filters; user values win.

    Args:
        filters: user filters (parsed JSON object) or None.
        preset: a name from :data:`PRESETS`, or None.
        calibrated: whether the request gave ``um_per_px`` (sets the default units to um).

    Returns:
        The validated spec and the preset name used.

    Raises:
        InvalidOptions: unknown key, wrong type, NaN/infinite/negative value, min above max,
            unknown preset, or um units without a calibration.
    """
    name = preset or "default"
    if name not in PRESETS:
        raise InvalidOptions(
            f"unknown preset {preset!r}; accepted: {', '.join(PRESETS)}", details={"presets": list(PRESETS)}
        )
    merged = {**_parse(PRESETS[name].filters), **_parse(filters or {})}
    merged.setdefault("units", "um" if calibrated else "px")
    if merged["units"] == "um" and not calibrated:
        raise _invalid("filters in um need a calibration: give um_per_px, or set units to px")
    for low, high in (
        ("area_min", "area_max"),
        ("diameter_min", "diameter_max"),
        ("mean_min", "mean_max"),
        ("std_min", "std_max"),
    ):
        if merged.get(low) is not None and merged.get(high) is not None and merged[low] > merged[high]:
            raise _invalid(f"filter {low}={merged[low]} is above {high}={merged[high]}")
    known = {f.name for f in fields(FilterSpec)}
    return FilterSpec(**{k: v for k, v in merged.items() if k in known and v is not None}), name


def _outlier_mask(values: np.ndarray, method: str, factor: float | None) -> np.ndarray:
    """True where a value lies outside the fences (needs at least 4 values)."""
    if method == "none" or values.size < 4:
        return np.zeros(values.size, dtype=bool)
    if method == "iqr":
        k = 1.5 if factor is None else factor
        q1, q3 = np.percentile(values, [25, 75])
        spread = q3 - q1
        return (values < q1 - k * spread) | (values > q3 + k * spread)
    k = 3.0 if factor is None else factor
    mean, std = values.mean(), values.std(ddof=1)
    return np.abs(values - mean) > k * std


def apply_filters(droplets: list[Droplet], spec: FilterSpec, um_per_px: float | None = None) -> dict[str, int]:
    """Set ``removed_reason`` on every droplet a filter removes (the first failing rule).

    Rules run in this order: edge_touching, edge_distance, area, diameter, circularity, mean, std,
    then outlier (computed on the diameters of the droplets still kept).

    Returns:
        Counts of removed droplets per reason.
    """
    scale = um_per_px if spec.units == "um" else 1.0
    if spec.units == "um" and not um_per_px:
        raise InvalidOptions("filters in um need a calibration: give um_per_px, or set units to px")
    checks: list[tuple[str, Any]] = [
        ("edge_touching", lambda d: spec.exclude_edge_touching and d.touches_edge),
        (
            "edge_distance",
            lambda d: spec.min_edge_distance is not None and d.min_edge_distance_px * scale < spec.min_edge_distance,
        ),
        ("area_min", lambda d: spec.area_min is not None and d.area_px * scale**2 < spec.area_min),
        ("area_max", lambda d: spec.area_max is not None and d.area_px * scale**2 > spec.area_max),
        (
            "diameter_min",
            lambda d: spec.diameter_min is not None and d.equivalent_diameter_px * scale < spec.diameter_min,
        ),
        (
            "diameter_max",
            lambda d: spec.diameter_max is not None and d.equivalent_diameter_px * scale > spec.diameter_max,
        ),
        ("circularity_min", lambda d: spec.circularity_min is not None and d.circularity < spec.circularity_min),
        ("mean_min", lambda d: spec.mean_min is not None and d.intensity_mean < spec.mean_min),
        ("mean_max", lambda d: spec.mean_max is not None and d.intensity_mean > spec.mean_max),
        ("std_min", lambda d: spec.std_min is not None and d.intensity_std < spec.std_min),
        ("std_max", lambda d: spec.std_max is not None and d.intensity_std > spec.std_max),
    ]
    counts: dict[str, int] = {}
    for d in droplets:
        d.removed_reason = None
        for reason, fails in checks:
            if fails(d):
                d.removed_reason = reason
                counts[reason] = counts.get(reason, 0) + 1
                break
    survivors = [d for d in droplets if d.removed_reason is None]
    diameters = np.array([d.equivalent_diameter_px for d in survivors], dtype=np.float64)
    for d, out in zip(survivors, _outlier_mask(diameters, spec.outliers, spec.outlier_factor), strict=True):
        if out:
            d.removed_reason = "outlier"
            counts["outlier"] = counts.get("outlier", 0) + 1
    return counts


# What makes a packed monolayer, for the auto preset: enough whole droplets, covering much of the
# field, of one size. A population that is mostly debris or noise fails all three, so outlier
# removal is only ever applied relative to a real, uniform population.
_MONOLAYER_MIN_DROPLETS = 20
_MONOLAYER_MIN_COVER = 0.4
_MONOLAYER_MAX_ROBUST_CV = 0.1


def choose_preset(appearance: str | None, diameters: np.ndarray, area_fraction: float) -> tuple[str, dict[str, Any]]:
    """The preset the ``auto`` preset stands for on one image, and why.

    Args:
        appearance: the detector's cue (rim, bright, dark), or None (the grid segmenter).
        diameters: equivalent diameters of the droplets not cut by the image border, px.
        area_fraction: the share of the image the found droplets cover.

    Returns:
        The preset's name and the figures it was chosen by: ``appearance``, ``whole_droplets``,
        ``area_fraction``, ``diameter_robust_cv`` (interquartile range / 1.349 / median).
    """
    n = int(diameters.size)
    robust_cv = None
    if n >= 4:
        q1, median, q3 = np.percentile(diameters, [25, 50, 75])
        robust_cv = float((q3 - q1) / 1.349 / median) if median > 0 else None
    why = {
        "appearance": appearance,
        "whole_droplets": n,
        "area_fraction": round(float(area_fraction), 4),
        "diameter_robust_cv": round(robust_cv, 4) if robust_cv is not None else None,
    }
    if appearance == "bright":
        return "bright_droplets", why
    if appearance == "dark":
        return "dark_droplets", why
    monolayer = (
        n >= _MONOLAYER_MIN_DROPLETS
        and area_fraction > _MONOLAYER_MIN_COVER
        and robust_cv is not None
        and robust_cv < _MONOLAYER_MAX_ROBUST_CV
    )
    return ("packed_monolayer" if monolayer else "default"), why
