"""Generating a stack: background jobs (``jobs``), Generate (``generation``), Extend and Regenerate
(``known_levels``) and their operators (``operators``)."""
