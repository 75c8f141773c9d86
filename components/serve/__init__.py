"""`cropsearch serve`: one process holding an index open and its embedder warm, a JSON API and a page.

`searcher.py` (the index and embedder a server answers from), `pictures.py` (JPEGs of stored images
and crops by id), `api.py` (the FastAPI app: routes, the token, upload limits, errors as JSON),
`page/` (the search page: plain HTML, CSS and JS, no build step, nothing fetched from elsewhere).
May import `search/`, `store/`, `models/` and `pipeline/`.
"""
