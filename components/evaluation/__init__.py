"""Measuring retrieval quality, and the synthetic world that gives it exact answers offline.

`metrics.py` (recall@k, P@5, P@10, AP by object size and search mode), `ground_truth.py` (COCO's
annotations or the world's own), `regions.py` (region sources compared on classes hidden from the
detector: `--unknown-classes`), `report.py` (markdown tables and a recall plot), `synthetic.py`
(generated scenes of coloured shapes), `training.py` (training the world's detector and CLIP).
May import `models/`, `store/` and `search/`.
"""
