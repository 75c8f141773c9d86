"""Everything that touches storage: LanceDB's three tables, crop files, and the one-writer lock.

`schema.py` (Arrow schemas, rows, filters), `database.py` (opening tables, the index's embedder,
naming damaged tables), `writer.py` (upserts, removals, compaction, indexes: what indexing uses),
`reader.py` (the query path's async reads), `objects.py` (whole files at a path or s3:// URI),
`locks.py` (one writer per database), `recovery.py` (back to table versions that read).
Imports `schemas/` and `components.errors` only.
"""
