"""The stack folder and its video: layer PNGs + manifest.json (``stack_io``), atomic publishing
(``publish``), image files of any depth (``images``), the fractional-zoom preview renderer and MP4
writer (``preview``). Imports ``core.zoom`` and ``core.errors``; nothing of models or backends.
"""
