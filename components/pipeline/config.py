"""The one place a run's chunk settings are made and their defaults resolved.

`chunk_config` runs once in the flow; `machine_for` once in each process that runs the models
(the flow's, or a Ray or Dask worker's) and decides what depends on that machine: the device, the
precision `auto` picks there, the torch and decode threads, and the detector's batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from components.models.devices import decide_machine
from components.models.loading import portable_spec
from schemas.machine import MachinePlan
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


def machine_for(config: ChunkConfig) -> MachinePlan:
    """This machine's plan for a run's chunk settings: what it asked for (`auto` or values), decided here."""
    return decide_machine(config.device, config.precision, config.batching)
