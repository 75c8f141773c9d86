"""Answering a query vector and showing the answer: what the query flow (and any front end) shares.

`ranking.py` (prefiltered nearest neighbours, folded per parent, joined to records) and
`render.py` (a PNG grid of hits over their parents, markdown tables). May import `store/` and `pipeline/`.
"""
