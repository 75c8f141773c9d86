"""The one place a run's chunk settings are made and their defaults resolved.

`chunk_config` runs once in the flow; `on_this_machine` runs where the models run (the flow's
process, or a Ray or Dask worker) and fills in what depends on that machine: the device, the
precision `auto` picks there, the detector's batch size for that device, and one decode thread
per core.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from components.models.devices import default_decode_threads, default_detect_batch_size, pick_device, pick_precision
from components.models.loading import portable_spec
from schemas.params import ChunkConfig, IndexParams
from schemas.settings import is_object_store_uri


def chunk_config(
    params: IndexParams, embedder_specs: Sequence[str], model_roots: Sequence[Path] | None = None
) -> ChunkConfig:
    """The run's chunk settings for these embedders, with local paths made absolute for workers in other directories.

    `model_roots`: a deployed run's, where every worker checks its models again as it opens them.
    """
    crops_uri = params.resolved_crops_uri
    if not is_object_store_uri(crops_uri):
        crops_uri = str(Path(crops_uri).expanduser().resolve())
    return ChunkConfig(
        detector=portable_spec(params.resolved_detector),
        vocabulary=None if params.vocabulary is None else portable_spec(params.vocabulary),
        embedders=[portable_spec(spec) for spec in embedder_specs],
        device=params.device,
        precision=params.precision,
        detection=params.detection,
        batching=params.batching,
        crops_uri=crops_uri,
        object_store=params.object_store,
        model_roots=None if model_roots is None else [Path(root).resolve() for root in model_roots],
    )


def on_this_machine(config: ChunkConfig) -> ChunkConfig:
    """The config with this machine's device, precision, detector batch size and decode threads filled in."""
    device = pick_device(config.device)
    batching = config.batching.model_copy(
        update={
            "detect_batch_size": config.batching.detect_batch_size or default_detect_batch_size(device),
            "decode_threads": config.batching.decode_threads or default_decode_threads(),
        }
    )
    return config.model_copy(
        update={"device": device, "precision": pick_precision(config.precision, device), "batching": batching}
    )
