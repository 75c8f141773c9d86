"""Pydantic records and parameters shared by components, flows and the CLI. Imports nothing of cropsearch's.

`records.py` (image, crop, embedding rows), `results.py` (what flows return), `files.py` (local
files and folders tasks pass), `settings.py` (settings groups and checked types), `flat.py` (models
of groups seen as flat fields), `params.py` (each flow's parameters, and a chunk's config),
`stack.py` and `policy.py` (the operator's stack and what deployed runs may do).
"""
