"""The zoom rig: its scene, planes, drivers and camera (``scene_build``), zoom_level keys
(``animation``), the animation settings and Load Zoom Stack (``operators``)."""
