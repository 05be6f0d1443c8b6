"""sam_droplet: find, outline, measure and count droplets in micrographs.

One call segments an image (an array, a path or a file's bytes)::

    import sam_droplet as sd
    model = sd.load_model("model/mobile_sam.pt")      # optional; reusable
    r = sd.segment("droplets.png", model=model, um_per_px=0.65)
    r.labels, r.droplets, r.summary                    # uint32 labels, Droplet records, statistics
    r.to_csv("droplets.csv")
    t = sd.track("channel.avi", model=model)        # a video or TIFF stack: tracks, events, summary
    sd.segment_archive("plate.zip", "out/", model=model)  # every image of a ZIP: files and a summary

Data flows one way: read (:mod:`.io.read`), detect (:mod:`.engine.detect`), refine with SAM
(:mod:`.sam`), resolve, measure and filter (:mod:`.engine`), write (:mod:`.io.write`), tied
together by :mod:`.pipeline`. The web service (:mod:`.web`) sits on top and is imported only when
asked for: importing this package does not import Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .batch import segment_archive
from .engine.filters import PRESETS
from .engine.measure import Droplet
from .errors import (
    ConfigError,
    DropletError,
    ImageTooLarge,
    InvalidImage,
    InvalidOptions,
    NotReady,
    OutOfMemory,
    StartupError,
    UnsupportedImageType,
)
from .io.read import ImageData, read_channel, read_image
from .io.write import FORMATS, render
from .motion import TrackResult, track
from .pipeline import Engine, SegmentOptions, load_model, segment
from .result import Result
from .settings import SEGMENTERS, EngineSettings

__version__ = "0.1.0"
__all__ = [
    "FORMATS",
    "PRESETS",
    "SEGMENTERS",
    "ConfigError",
    "Droplet",
    "DropletError",
    "Engine",
    "EngineSettings",
    "ImageData",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidOptions",
    "NotReady",
    "OutOfMemory",
    "Result",
    "SegmentOptions",
    "StartupError",
    "TrackResult",
    "UnsupportedImageType",
    "__version__",
    "create_app",
    "load_model",
    "read_channel",
    "read_image",
    "render",
    "segment",
    "segment_archive",
    "track",
]

if TYPE_CHECKING:
    from .web import create_app


def __getattr__(name: str) -> Any:
    # The web layer (Flask) loads only when asked for.
    if name == "create_app":
        from .web import create_app

        return create_app
    raise AttributeError(name)
