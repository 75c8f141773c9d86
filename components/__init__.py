"""Plain-Python building blocks of cropsearch, one subpackage per subsystem. Nothing here imports Prefect.

- `models/`: the two model families (detector, embedder), how they are found, loaded and run
- `regions/`: region sources, one protocol for all: the detector's boxes, class-agnostic proposals, tiles
- `store/`: LanceDB (schema, writer, reader), crop files, the one-writer lock, recovery
- `pipeline/`: indexing's data path: sources to files, files to records, records through the models
- `search/`: answering a query vector: prefilter, rank, fold per parent, join; showing hits
- `evaluation/`: retrieval metrics, ground truth, reports, the synthetic world and its training
- `ops/`: running it for others: the local Prefect stack, preflight checks, the trust policy

`errors.py` is shared by all. The order above is the order of dependence: a package may import
those before it (and `schemas/`), never those after, except `ops/`, which checks what the others do.
"""
