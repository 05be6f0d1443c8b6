"""sam_droplet: find, outline, measure and count droplets in micrographs.

The pipeline runs request -> decode -> detect -> refine with SAM -> measure -> filter -> serialize:
:mod:`~sam_droplet.decode`, :mod:`~sam_droplet.detect`, :mod:`~sam_droplet.refine`,
:mod:`~sam_droplet.measure`, :mod:`~sam_droplet.filters`, :mod:`~sam_droplet.export`, tied together by
:mod:`~sam_droplet.pipeline` and served by the blueprint in :mod:`~sam_droplet.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from .factory import create_app


def __getattr__(name: str) -> Any:
    # Importing the package (for the CLI or synthetic images) must not pull in Flask.
    if name == "create_app":
        from .factory import create_app

        return create_app
    raise AttributeError(name)
