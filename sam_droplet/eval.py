"""``python -m sam_droplet.eval FOLDER...``: the accuracy and speed of the segmentation against
ground truth, the same command as ``sam-droplet-evaluate`` (:mod:`sam_droplet.tools.evaluate`)."""

from __future__ import annotations

import sys

from .tools.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
