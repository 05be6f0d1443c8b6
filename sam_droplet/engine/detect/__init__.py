"""Classical droplet detection (OpenCV, SciPy): droplets with centre, radius, score and mask.

One module per step: :mod:`.normalize` (the working image), :mod:`.proposals` (step 1, on
:mod:`.regions`), :mod:`.boundary` and :mod:`.outlines` (step 2), :mod:`.detector` (the three steps,
:func:`detect_droplets`). Beside it, :mod:`.learned` decodes the droplet model's droplets and
:mod:`.combine` makes one set from both detectors.

Detection runs in three steps.

1. **Proposals**: centres and rough radii, as many as it takes not to miss a droplet. Four cues
   propose; a proposal is only a hypothesis, so they are pooled:

   ``rim``
       Bright-field droplets are outlined by a dark refraction rim. The black top-hat marks thin
       dark structures; round regions enclosed by rims are droplet interiors. This runs on an image
       pyramid with one small kernel, so the same code finds 8 px droplets at full resolution and
       500 px droplets at 1/32 resolution. A region is proposed when its outline lies mostly on a
       rim and it is round (inscribed over equivalent radius; about 0.7 for the curved triangle
       between three packed droplets). At full resolution only pieces of interior a few droplets
       wide are split into droplets; the background is left whole (flooding it would be a third of
       the detector's time on a large image, and droplets leaking into it through a broken rim are
       found one level up). Full resolution runs in horizontal strips on all cores.
   ``bright`` / ``dark``
       Fluorescent (or dyed) droplets differ from a flat background by intensity: the background is
       estimated per tile and subtracted, Otsu's threshold separates droplets, and a
       distance-transform watershed splits touching ones.
   ``hough``
       Edge gradients vote for circle centres (OpenCV's Hough transform) on every pyramid level,
       with a permissive threshold: faint and partly hidden outlines are proposed too.

2. **Boundary fit.** Droplets are star-shaped around their centre. Intensity profiles are sampled
   along rays from each proposal (at the pyramid level that matches its size), every sample is
   scored as a possible boundary (``rim``: the outer flank of the first dark band met going
   outward, or a step down into a darker background; ``bright``/``dark``: a falling or rising
   edge), and dynamic programming finds the strongest closed, smooth path through those scores.
   Each point is then placed where the rim's outer flank has climbed a quarter of the way back
   (where hand-drawn outlines put droplet edges) or, for steps, half-way. An outline is accepted
   when enough rays show a clear edge (support), it is regular, most of it lies on one circle
   (texture traced into a blob does not), and, with the rim model, enough of its edge is a rim. An
   outline with fewer clear edges (a droplet half hidden or half out of focus) is accepted when
   those edges lie on one circle. Two upper bounds on support and rim fraction (the steepest slope
   on each ray, then the edge evidence itself) skip the trace for proposals that cannot pass: on a
   busy image most Hough proposals. Proposals are fitted best first; once a droplet has a
   confident outline, the proposals that repeat it are not fitted. The boundary model (rim, bright
   or dark) is chosen once per image, on the best proposals. Under the rim model a bright proposal
   (a droplet's lens-bright core) is also proposed 1.5 times larger, so the rays reach the rim of
   small droplets; and a proposal that found edges on few rays is tried again 1.4 times larger.
   Under the rim model a proposal still without an outline is fitted once more taking rims past
   the first dark band on each ray (a droplet carrying beads or cells, whose rays cross them
   first), and kept only when its edge is clear on most rays and lies on one circle.

3. **One outline per droplet**: non-maximum suppression of overlapping outlines by score, then the
   rules of :func:`sam_droplet.engine.instances.resolve_overlaps` (contact lines between touching
   droplets, gaps between packed droplets, clusters, nested objects). A small droplet seen through
   a clearly outlined one at least twice its size is kept with it (``nested_droplets``), as are
   three or more objects of one size (beads, cells) inside a fainter one.

All intensities here are a normalised copy used only to find droplets; measurements use the
original pixels (:mod:`sam_droplet.engine.measure`).
"""

from .detector import Detection, detect_droplets
from .normalize import normalize_intensity
from .params import APPEARANCES, DetectionParams
from .proposals import Proposals, propose_droplets

__all__ = [
    "APPEARANCES",
    "Detection",
    "DetectionParams",
    "Proposals",
    "detect_droplets",
    "normalize_intensity",
    "propose_droplets",
]
