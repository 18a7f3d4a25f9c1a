"""The live view: a web page served by the supervisor with each camera's annotated picture.

Modules: :mod:`.draw` (pixels to JPEG with boxes), :mod:`.feed` (one camera's pictures, matched
to detections, JPEG cache), :mod:`.live` (feeds, ring sampler, stats), :mod:`.detections`
(in-process subscriber of the publish proxy), :mod:`.auth` (HTTP Basic), :mod:`.routes` (the
WSGI app), :mod:`.server` (the HTTP server), :mod:`.service` (all of it, started and stopped by
the supervisor). Nothing is imported here: importing the package has no cost.
"""
