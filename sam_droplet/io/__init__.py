"""Images in, results out: :mod:`.read` makes an :class:`~.read.ImageData` of a file, bytes or an
array; :mod:`.write` renders a result as JSON, CSV, a label image, an overlay or COCO, and the batch
summary. The web service and the command line use these same functions."""
