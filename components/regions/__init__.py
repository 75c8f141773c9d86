"""Region sources: what cuts a photo into the regions that get a crop and a vector of their own.

A crop index finds only what its sources cut out, and a closed-vocabulary detector cuts out only
what it has a name for. Every source answers one question, `RegionSource.regions` (`region.py`):
for a batch of decoded pictures, the boxes it proposes in each. `detector.py` (the detector's
boxes, an adapter over `models.detector.Detector`), `tiles.py` (grid levels with overlap, no
model), `sources.py` (the sources a run's settings ask for). Class-agnostic proposals, an
open-vocabulary detector and IoU dedupe are to come (issue 41). The stages ask a run's sources
for regions and never learn which kind they got. May import `models/`.
"""
