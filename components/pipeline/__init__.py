"""Indexing's data path: a source becomes files on disk, files become records, records go through the models.

`sources.py` (download, unzip, list), `formats.py` (which files are photos), `images.py` (hash and
decode safely), `crops.py` (regions to crop records and files), `prefetch.py` (CPU work on threads
beside the models), `stages.py` (a chunk's plan, model work and write), `report.py` (the run's
report as a table). May import `models/`, `regions/` and `store/`.
"""
