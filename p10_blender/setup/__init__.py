"""Set-up: the Python environment with torch/diffusers (``dependencies``), its install operator
(``operators``) and Blender 4.2 … 5.0 API differences (``compat``)."""
