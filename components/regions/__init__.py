"""Region sources: what cuts a photo into the regions that get a crop and a vector of their own.

A crop index finds only what its sources cut out, and a closed-vocabulary detector cuts out only
what it has a name for. Every source answers one question, `RegionSource.regions` (`region.py`):
for a batch of decoded pictures, the boxes it proposes in each. `detector.py` (the detector's
boxes, an adapter over `models.detector.Detector`), `proposals.py` (class-agnostic proposals:
blobs that stand out, no model, no name), `tiles.py` (grid levels with overlap, no model),
`sources.py` (the sources a run's settings ask for, and one photo's regions from all of them, a
region found twice stored once). An open-vocabulary detector is to come (issue 41). The stages ask
a run's sources for regions and never learn which kind they got. May import `models/`.
"""
