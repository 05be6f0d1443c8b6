"""The stages of the droplet pipeline that need no model.

:mod:`.detect` finds droplets (classical detector), :mod:`.instances` makes every droplet count
once, :mod:`.border` cuts outlines that leak onto the picture's border back to their droplet,
:mod:`.measure` measures them, :mod:`.filters` applies filters and presets,
:mod:`.fluorescence` reads a second channel, :mod:`.point` finds one droplet at a clicked point,
and :mod:`.thresholds` and :mod:`.circles` hold Otsu's threshold and the circle fit for all of
them. SAM's stages are in :mod:`sam_droplet.sam`; :class:`sam_droplet.pipeline.Engine` runs them
in order.
"""
