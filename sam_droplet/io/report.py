"""Reports people can file: a one-page PDF per image, and a batch report, drawn with matplotlib.

A page holds the overlay (a thumbnail), the diameter histogram, the cumulative distribution by
number and by volume, the size table (``summary.size``), the populations, the ddPCR and occupancy
figures when there are any, and the settings and versions that produced them. A batch report starts
with one page comparing the images, then one page per image.

Pages are built from :class:`ReportPage` records, which come from a :class:`~sam_droplet.result.Result`
(:func:`page_from_result`) or from the page's corrected droplets (the web API's ``/report``), so a
report shows what the user kept.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.fluorescence import ddpcr_statistics, occupancy
from ..engine.sizes import size_distribution, size_populations

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["ReportPage", "page_from_result", "report_pdf", "thumbnail"]

A4 = (8.27, 11.69)  # inches, portrait
_THUMB_SIDE = 900  # px: the overlay is shrunk to this before it goes into the PDF


@dataclass
class ReportPage:
    """What one image's report page shows.

    Attributes:
        title: the image's file name.
        diameters_px: equivalent diameters of the kept droplets, in pixels.
        um_per_px: calibration, or None; ``calibration`` says where it came from.
        overlay: an 8-bit RGB picture of the image with its outlines, or None.
        positive: per kept droplet, whether it is positive (with a fluorescence channel), or None.
        threshold: the positive threshold and how it was chosen, when there is a fluorescence channel.
        objects: fluorescent objects per kept droplet, or None.
        contents: objects seen in bright field per kept droplet, or None.
        settings: segmenter, preset, filters and whatever else produced the result (printed as is).
        removed: droplets left out, by reason.
    """

    title: str
    diameters_px: np.ndarray
    um_per_px: float | None = None
    calibration: str = "none"
    overlay: np.ndarray | None = None
    positive: np.ndarray | None = None
    threshold: dict[str, Any] | None = None
    objects: np.ndarray | None = None
    contents: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return "um" if self.um_per_px else "px"

    @property
    def diameters(self) -> np.ndarray:
        """Diameters in the page's unit."""
        return self.diameters_px * (self.um_per_px or 1.0)

    def size(self) -> dict[str, Any]:
        return size_distribution(self.diameters, self.unit)

    def populations(self) -> list[dict[str, Any]]:
        return size_populations(self.diameters, self.unit)

    def ddpcr(self) -> dict[str, Any] | None:
        if self.positive is None:
            return None
        volume = (
            float(np.mean(math.pi / 6 * self.diameters**3 / 1000)) if self.um_per_px and self.diameters.size else None
        )
        return ddpcr_statistics(int(self.positive.size), int(self.positive.sum()), volume)


def page_from_result(result: Result, title: str = "image") -> ReportPage:
    """The report page of a segmentation, as segmented (kept droplets, filters applied)."""
    kept = result.droplets
    fluorescence = result.fluorescence_summary
    return ReportPage(
        title=title,
        diameters_px=np.array([d.equivalent_diameter_px for d in kept], dtype=np.float64),
        um_per_px=result.um_per_px,
        calibration=result.calibration_source,
        overlay=thumbnail(result.overlay(show_ids=False)),  # kept small: a batch holds one per image
        positive=np.array([bool(d.fluorescence.get("positive")) for d in kept]) if fluorescence else None,
        threshold=fluorescence["fluorescence"]["call"] if fluorescence else None,
        objects=np.array([d.fluorescence.get("objects", 0) for d in kept]) if fluorescence else None,
        contents=np.array([d.contents["count"] for d in kept]) if kept and kept[0].contents is not None else None,
        settings={
            "segmenter": result.segmenter,
            "preset": result.preset,
            "filters": result.filters.as_dict(),
            "model": (result.model or {}).get("model_type", "none"),
            "detector": result.details.get("detector", {}).get("appearance", "-"),
        },
        removed=dict(result.removed_counts),
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1e-3 or abs(value) >= 1e4
            else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    return str(value)


def _table(
    ax: Any,
    rows: list[list[str]],
    header: list[str] | None = None,
    widths: list[float] | None = None,
    fontsize: float = 7.5,
) -> None:
    """A table filling the axes ``ax`` (rows shrink to fit; nothing spills over)."""
    ax.axis("off")
    if not rows:
        return
    table = ax.table(
        cellText=rows, colLabels=header, colWidths=widths, cellLoc="left", colLoc="left", bbox=[0, 0, 1, 1]
    )
    table.auto_set_font_size(False)
    table.set_fontsize(fontsize)
    for (row, _), cell in table.get_celld().items():
        cell.set_linewidth(0.3)
        if header and row == 0:
            cell.set_facecolor("#eef2f8")


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` shrunk to at most the report's thumbnail side (900 px)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, _THUMB_SIDE / max(h, w))
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _cumulative(ax: Any, diameters: np.ndarray, unit: str, label_prefix: str = "") -> None:
    d = np.sort(diameters)
    if not d.size:
        return
    by_number = np.arange(1, d.size + 1) / d.size
    by_volume = np.cumsum(d**3) / (d**3).sum()
    ax.step(d, 100 * by_number, where="post", lw=1.2, label=f"{label_prefix}by number")
    ax.step(d, 100 * by_volume, where="post", lw=1.2, label=f"{label_prefix}by volume")
    ax.set_xlabel(f"diameter ({unit})")
    ax.set_ylabel("cumulative %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


def _image_page(fig: Any, page: ReportPage, versions: str) -> None:
    size, populations, unit = page.size(), page.populations(), page.unit
    fig.text(0.06, 0.965, page.title, fontsize=14, weight="bold")
    calibration = f"{page.um_per_px:g} um/px (from the {page.calibration})" if page.um_per_px else "uncalibrated (px)"
    fig.text(0.06, 0.948, f"{size['n']} droplets · {calibration}", fontsize=9)

    ax = fig.add_axes((0.06, 0.655, 0.42, 0.27))
    if page.overlay is not None:
        ax.imshow(thumbnail(page.overlay))
    ax.axis("off")
    ax = fig.add_axes((0.59, 0.69, 0.36, 0.22))
    if page.diameters.size:
        ax.hist(page.diameters, bins=30, color="#2f6fdf")
    ax.set_xlabel(f"diameter ({unit})", fontsize=8)
    ax.set_ylabel("droplets", fontsize=8)
    ax.set_title("histogram", fontsize=9)
    ax.tick_params(labelsize=7)

    ax = fig.add_axes((0.10, 0.40, 0.36, 0.20))
    _cumulative(ax, page.diameters, unit)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("cumulative distribution", fontsize=9)
    ax.tick_params(labelsize=7)
    ax = fig.add_axes((0.59, 0.37, 0.36, 0.255))
    keys = ("n", "mean", "sd", "cv", "dn10", "dn50", "dn90", "dv10", "dv50", "dv90", "span", "d32", "d43")
    names = {"d32": "D[3,2] Sauter", "d43": "D[4,3] De Brouckere", "dv50": "dv50 = D[v,0.5]"}
    rows = [[names.get(k, k) + ("" if k in ("n", "cv", "span") else f" ({unit})"), _fmt(size[k])] for k in keys]
    _table(ax, rows, ["size distribution", ""], [0.62, 0.38])

    ax = fig.add_axes((0.06, 0.225, 0.89, 0.025 * (len(populations) + 1)))
    rows = [
        [str(i + 1), str(p["n"]), _fmt(p["mean_diameter"]), _fmt(p["cv"]), _fmt(p["number_fraction"]),
         _fmt(p["volume_fraction"]), _fmt(p["volume_ratio"])]
        for i, p in enumerate(populations)
    ]  # fmt: skip
    header = ["population", "n", f"mean d ({unit})", "CV", "number fraction", "volume fraction", "volume / main"]
    _table(ax, rows, header)
    fig.text(0.06, 0.232 + 0.025 * (len(populations) + 1), "populations (mixture of log-normals on volume)", fontsize=9)

    rows = []
    ddpcr = page.ddpcr()
    if ddpcr is not None:
        threshold = page.threshold or {}
        rows += [
            ["positive k / n", f"{ddpcr['k']} / {ddpcr['n']}"],
            ["threshold", f"{_fmt(threshold.get('threshold'))} ({threshold.get('method', '-')})"],
            ["lambda, copies / droplet", _fmt(ddpcr["lambda"], 4)],
            ["95 % interval", " to ".join(_fmt(v, 4) for v in ddpcr["lambda_ci"] or [None, None])],
            ["copies per uL", _fmt(ddpcr["copies_per_ul"], 4)],
        ]
    for name, counts in (("fluorescent objects", page.objects), ("contents", page.contents)):
        if counts is not None:
            occ = occupancy(np.asarray(counts, dtype=np.int64))
            rows += [
                [f"{name} / droplet", f"mean {_fmt(occ['mean_per_droplet'])}"],
                ["  observed 0/1/2/3+", " / ".join(str(o) for o in occ["observed"])],
                ["  Poisson 0/1/2/3+", " / ".join(_fmt(e, 3) for e in occ["poisson_expected"])],
            ]
    rows = rows or [["no fluorescence channel", "and no contents counted"]]
    ax = fig.add_axes((0.06, 0.055, 0.42, min(0.15, 0.02 * (len(rows) + 1))))
    _table(ax, rows, ["digital PCR and occupancy", ""], [0.55, 0.45])

    rows = [[k, _fmt(v)] for k, v in page.settings.items() if not isinstance(v, dict)]
    rows += [[f"filter {k}", _fmt(v)] for k, v in page.settings.get("filters", {}).items()]
    rows.append(["removed", ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in page.removed.items()) or "none"])
    ax = fig.add_axes((0.53, 0.055, 0.42, min(0.15, 0.0135 * (len(rows) + 1))))
    _table(ax, rows, ["settings", ""], [0.45, 0.55], fontsize=6.5)
    fig.text(0.06, 0.02, versions, fontsize=7, color="#555555")


def _batch_page(fig: Any, pages: list[ReportPage], versions: str) -> None:
    fig.text(0.06, 0.965, f"Batch of {len(pages)} images", fontsize=14, weight="bold")
    ax = fig.add_axes((0.10, 0.62, 0.85, 0.30))
    for page in pages:
        d = np.sort(page.diameters)
        if d.size:
            ax.plot(d, 100 * np.cumsum(d**3) / (d**3).sum(), lw=1.2, label=page.title[:30])
    units = sorted({p.unit for p in pages})
    ax.set_xlabel(f"diameter ({'/'.join(units)})", fontsize=8)
    ax.set_ylabel("cumulative volume %", fontsize=8)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if len(pages) <= 12:
        ax.legend(fontsize=6, loc="lower right")
    ax.set_title("cumulative volume distribution of each image", fontsize=9)
    rows = []
    for page in pages:
        s, dd = page.size(), page.ddpcr()
        rows.append(
            [page.title[:26], str(s["n"]), s["unit"], _fmt(s["mean"]), _fmt(s["cv"]), _fmt(s["dv50"]), _fmt(s["span"]),
             _fmt(s["d32"]), str(len(page.populations())), f"{dd['k']}/{dd['n']}" if dd else "-"]
        )  # fmt: skip
    height = min(0.5, 0.022 * (len(rows) + 1))
    ax = fig.add_axes((0.06, 0.55 - height, 0.89, height))
    header = ["image", "n", "unit", "mean d", "CV", "Dv50", "span", "D[3,2]", "pops", "positive"]
    _table(ax, rows, header, [0.27, 0.07, 0.06, 0.09, 0.08, 0.09, 0.08, 0.09, 0.07, 0.1])
    fig.text(0.06, 0.02, versions, fontsize=7, color="#555555")


def report_pdf(pages: list[ReportPage], versions: str | None = None) -> bytes:
    """A PDF: one page per :class:`ReportPage`, after a batch summary page when there are several."""
    # Figures made directly (not through pyplot) need no display or GUI backend: any thread, any server.
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from .. import __version__

    versions = versions or f"sam_droplet {__version__} · {time.strftime('%Y-%m-%d %H:%M')}"
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": "sam_droplet report", "Creator": f"sam_droplet {__version__}"}) as pdf:
        if len(pages) > 1:
            fig = Figure(figsize=A4)
            _batch_page(fig, pages, versions)
            pdf.savefig(fig)
        for page in pages:
            fig = Figure(figsize=A4)
            _image_page(fig, page, versions)
            pdf.savefig(fig)
    return buf.getvalue()
