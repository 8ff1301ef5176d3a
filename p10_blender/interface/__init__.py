"""What the artist sees and sets: scene settings (``properties``: scene.p10), the N-panel
(``panel``), the prompt list's operators (``prompt_ops``), preferences and the model list
(``preferences``, ``models_ui``)."""
