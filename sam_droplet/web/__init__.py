"""The web service: a Flask application factory, the HTTP API and the upload page.

A thin layer over the library: requests are parsed here and segmented by
:func:`sam_droplet.segment`; admission, the image cache, health, rate limits, keys, metrics and
logs are this layer's alone. ``templates/`` and ``static/`` (the page) are package data.
"""

from .factory import create_app

__all__ = ["create_app"]
