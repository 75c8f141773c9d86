"""The models: a one-method `Detector` and `Embedder` interface, and YOLO and CLIP behind them.

One file per model family (`detector.py`, `embedder.py`); `loading.py` names, finds and caches
weights (hub id, local path or plug-in); `devices.py` decides a machine's device, precision and threads
once (`decide_machine`), and loading takes that decision as it is;
`packed_linear.py` is the CPU bf16 fast path; `plugins.py` loads `plugin:<module>:<factory>` fakes.
Imports `schemas/`, `components.errors` and `components.ops.access` (the roots check, a leaf
module: a deployed run's models are checked again where they are opened) only; heavy libraries are
imported inside functions.
"""
