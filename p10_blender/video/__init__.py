"""The video: the sequencer scene with captions (``sequencer``), the frame-by-frame MP4 render
(``video_render``), Make / Render Zoom Video (``operators``)."""
