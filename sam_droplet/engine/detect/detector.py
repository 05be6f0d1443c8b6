"""Droplet detection, the three steps tied together: :func:`detect_droplets`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..instances import Instance, ResolveReport, resolve_overlaps
from .boundary import clear_edge
from .normalize import background_noise, noise_sigma, normalize_intensity, pyramid
from .outlines import first_pass, fit_outlines, rasterize
from .overlays import off_annotations
from .params import APPEARANCES, Check, DetectionParams
from .proposals import Proposals, merge_proposals, propose_all

__all__ = ["Detection", "detect_droplets"]

_MODEL_SAMPLE = 200  # proposals used to choose the boundary model
_RECALIBRATE = 1.2  # judge again when the background's noise asks for edges this much stronger


@dataclass
class Detection:
    """Result of :func:`detect_droplets`.

    Attributes:
        instances: one per droplet; masks as crops in image coordinates, ``center``, ``radius`` and
            ``score`` set.
        appearance: the cue that was used.
        n_proposals: proposals before the boundary fit.
        resolve: what overlap resolution removed (the instances are already resolved).
        on_annotations: outlines left out because they lay on burnt-in text or a scale bar
            (:mod:`.overlays`).
    """

    instances: list[Instance]
    appearance: str
    n_proposals: int = 0
    resolve: ResolveReport = field(default_factory=ResolveReport)
    on_annotations: int = 0

    @property
    def median_diameter_px(self) -> float | None:
        if not self.instances:
            return None
        return float(np.median([2.0 * np.sqrt(i.area / np.pi) for i in self.instances]))


def detect_droplets(
    gray: np.ndarray,
    params: DetectionParams | None = None,
    check: Check | None = None,
    annotations: Callable[[], np.ndarray | None] | None = None,
) -> Detection:
    """Find droplets in a single-channel image.

    Args:
        gray: HxW image in any numeric dtype (original intensities; not modified).
        params: detector parameters; the defaults suit bright-field and fluorescence micrographs.
        check: called with the stage's name at bounded intervals (well under a second of work
            between two calls); whatever it raises stops the detection.
        annotations: the picture's burnt-in annotation mask, when the caller shares one with
            another detector (:func:`~sam_droplet.engine.detect.overlays.shared_annotation_mask`).

    Returns:
        A :class:`Detection` whose instances are the droplets, every pixel in at most one droplet.
    """
    params = params or DetectionParams()
    if params.appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {APPEARANCES}, got {params.appearance!r}")
    norm = normalize_intensity(gray)
    noise = noise_sigma(norm)
    levels = pyramid(norm, max(1, int(np.log2(max(min(norm.shape) / 32, 1))) + 1))

    # Proposals of every cue are only hypotheses (centre and size): pool them, so a droplet whose
    # rim is broken can still be proposed by its bright interior, and let the boundary fit decide.
    by_cue = propose_all(norm, noise, params, check)
    props = merge_proposals(Proposals.concat(list(by_cue.values())), check)
    if check:
        check("droplet proposals")

    # Choose the boundary model on the leading proposals, then fit them all.
    models = ("rim", "bright", "dark") if params.appearance == "auto" else (params.appearance,)
    explained: dict[str, float] = {}
    if len(models) > 1 and len(props):
        # The best-ranked proposals are the likeliest droplets: judge the models on them. (Round
        # bright and dark regions all score 1.0, so these are mostly specks and lens-bright cores;
        # the thresholds below were set on this sample. Other samples, measured and not kept:
        # docs/detectors.md, "Measured on 2026-11-29 (night)".)
        subset = props.take(np.argsort(-props.score, kind="stable")[:_MODEL_SAMPLE])
        for model in models:
            outlines = fit_outlines(levels, subset, model, noise, params, check)
            explained[model] = float(np.count_nonzero(outlines.score >= 0.7))
        # Bright-field rims are the common case. The rim model only accepts outlines that show a
        # rim, and fluorescence or dyed droplets give none at all; so a handful of confident ones
        # (or, on an image of a few droplets, as many as a step model finds), and a tenth of what
        # a step model finds, means the droplets have rims. Polydisperse emulsions with
        # out-of-focus droplets give the step models three times as many outlines as the rim
        # model, so the margin is wide.
        step = max(("bright", "dark"), key=lambda m: explained.get(m, 0.0))
        rims, steps = explained.get("rim", 0.0), explained.get(step, 0.0)
        cue = "rim" if rims > 0 and rims >= min(5.0, steps) and rims >= 0.1 * steps else step
    else:
        cue = models[0]

    # Regions of the opposite polarity (the oil between bright droplets, the gaps between dark
    # ones) are never droplets of the chosen model: leave them out of the final fit.
    opposite = {"rim": "dark", "bright": "dark", "dark": "bright"}[cue]
    final = {k: v for k, v in by_cue.items() if k != opposite}
    if cue == "rim":
        # A bright region in bright field is often only the droplet's lens-bright core, well inside
        # its rim, and rays reach 1.6 proposal radii: propose the core enlarged too.
        core = by_cue["bright"]
        final["bright"] = Proposals.concat([core, Proposals(core.cx, core.cy, 1.5 * core.r, 0.9 * core.score)])
    props = merge_proposals(Proposals.concat(list(final.values())), check)

    # Self-calibration: the noise of this image's own background (where no droplet was found), at
    # each pyramid level. When it asks for clearly stronger edges than the finest-scale estimate
    # did, the proposals are fitted against the noise of the level each is seen at: correlated
    # noise stops passing for small droplets, and large droplets, seen at coarse levels where the
    # noise has averaged out, are judged by that. Where the droplets are is read off a first pass
    # (the leading proposals fitted once, against the finest-scale noise), which the fit then
    # takes over when the noise stands: the whole fit runs once either way.
    first = first_pass(levels, props, cue, noise, params, check)
    found = first.found(params)
    seen = background_noise(levels, found.cx, found.cy, found.r) if len(found.score) else None
    if seen is not None and clear_edge(float(seen[0])) > _RECALIBRATE * clear_edge(noise):
        outlines = fit_outlines(levels, props, cue, seen, params, check)
    else:
        outlines = fit_outlines(levels, props, cue, noise, params, check, first=first)

    # Step 3: one outline per droplet, every pixel in at most one.
    instances: list[Instance] = []
    for i in range(len(outlines.score)):
        if check and i % 2048 == 0:
            check("outlines")
        inst = rasterize(outlines.ox[i], outlines.oy[i], outlines.radii[i], norm.shape)
        if inst is None:
            continue
        inst.score = float(outlines.score[i])
        inst.center = (float(outlines.cx[i]), float(outlines.cy[i]))
        inst.radius = float(outlines.r[i])
        inst.contrast = float(outlines.contrast[i])
        instances.append(inst)
    # Burnt-in timestamps and scale bars: their round glyphs are not droplets.
    instances, on_overlay = off_annotations(instances, gray, annotations)
    if check:
        check("overlap resolution")
    instances, report = resolve_overlaps(instances, keep_nested=params.nested_droplets, check=check)
    return Detection(
        instances=instances, appearance=cue, n_proposals=len(props), resolve=report, on_annotations=on_overlay
    )
