"""Model facts and files, torch-free: the family table, few-step model detection, the Hugging Face
cache (list, remove), downloads, and the memory/time estimate with its micro-batch fit.

The add-on imports these before torch is installed. Imports ``core.errors`` only (and
``huggingface_hub`` when called).
"""
