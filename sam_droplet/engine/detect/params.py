"""The detector's parameters and cues."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["APPEARANCES", "Check", "DetectionParams"]

APPEARANCES = ("auto", "rim", "bright", "dark")

# Called with the stage's name at bounded intervals of the work; raises to stop it (a deadline).
Check = Callable[[str], None]


@dataclass(frozen=True)
class DetectionParams:
    """Parameters of the classical detector.

    Attributes:
        appearance: ``auto`` (try every cue, keep the one that explains the image best), ``rim``
            (bright-field droplets with a dark rim), ``bright`` (bright droplets on a darker
            background, e.g. fluorescence) or ``dark`` (dark droplets on a brighter background).
        min_diameter_px: smallest droplet diameter reported, in pixels.
        max_diameter_px: largest droplet diameter reported, in pixels (None: no limit).
        rim_kernel_px: black top-hat width at each pyramid level, in level pixels; rims thinner
            than this are found.
        min_rim_support: fraction of a region's outline that must lie on a rim (``rim`` proposals).
        min_edge_support: fraction of a region's outline that must face background (threshold cues).
        min_roundness: inscribed over equivalent radius a region needs to be proposed.
        min_fit_support: fraction of rays on which the boundary fit must find a clear edge.
        min_fit_score: smallest support x (1 - irregularity) of an accepted outline.
        max_fit_irregularity: largest relative spread of the fitted radii (std beyond half a pixel,
            over the mean radius).
        min_rim_fraction: with the rim model, the fraction of rays whose edge must be a rim.
        min_circle_agreement: fraction of an outline's points that must lie within max(1.5 px, 5 %)
            of the radius of its best-fitting circle (texture and debris give wobbly outlines).
        min_partial_score: outlines scoring from this up to ``min_fit_score`` (a droplet partly
            hidden or out of focus) are accepted when ``partial_circle_agreement`` of their clear
            edges lie on one circle.
        partial_circle_agreement: see ``min_partial_score``.
        nested_droplets: report droplets seen through (inside) a clearly outlined droplet at least
            twice their size (polydisperse emulsions). Without it, what lies inside a droplet is its
            content (cells, beads; a monolayer has no droplets behind droplets) and only the
            droplet is reported.
        n_rays: rays per droplet in the boundary fit.
        max_levels: pyramid levels for the rim cue (None: as many as the image size allows).
        threads: threads for the proposal cues and the boundary fit (0: the CPU count, at most
            4). OpenCV and NumPy release the interpreter lock, so the cores work in parallel.
    """

    appearance: str = "auto"
    min_diameter_px: float = 5.0
    max_diameter_px: float | None = None
    rim_kernel_px: int = 5
    min_rim_support: float = 0.6
    min_edge_support: float = 0.5
    min_roundness: float = 0.8
    min_fit_support: float = 0.4
    max_fit_irregularity: float = 0.3
    min_fit_score: float = 0.6
    min_rim_fraction: float = 0.45
    min_circle_agreement: float = 0.6
    min_partial_score: float = 0.5
    partial_circle_agreement: float = 0.9
    nested_droplets: bool = True
    n_rays: int = 48
    max_levels: int | None = None
    threads: int = 0

    def workers(self) -> int:
        """Threads for the proposal cues and the fit: ``threads``, or the CPU count up to 4."""
        return max(self.threads or min(os.cpu_count() or 1, 4), 1)
