"""The `demo` flow: the idea, shown offline on the synthetic world with its trained models.

It indexes a few hundred generated scenes, then asks the same question of whole images alone and of
whole images plus crops, and marks each hit by the scene's ground truth.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from components.evaluation.synthetic import CLASS_NAMES, Scene, read_world, size_bucket
from flows.evaluate import generate_world
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import DEFAULT_DATA_DIR, WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE
from schemas.results import QueryHit


def ground_truth(hit: QueryHit, scenes: dict[str, Scene], class_name: str | None) -> str:
    """Whether the hit's scene holds the asked-for class, and at what size."""
    if class_name is None:
        return ""
    scene = scenes.get(Path(hit.image.uri).name)
    sizes = sorted({size_bucket(o.area) for o in scene.objects if o.class_name == class_name}) if scene else []
    return f"yes ({', '.join(sizes)})" if sizes else "no"


@flow(name="demo", persist_result=True)
def demo(
    text: str = "a small red triangle",
    scenes: int = 300,
    k: int = 5,
    data_dir: Path = DEFAULT_DATA_DIR,
    device: str = "auto",
) -> dict[str, list[tuple[QueryHit, str]]]:
    """Index `scenes` generated scenes with the world's models; answer `text` with whole images, then with crops too.

    Args:
        text: what to look for; name a colour and a shape (red/green/blue/yellow circle/square/triangle)
        scenes: how many generated scenes to index
        k: hits per answer
        data_dir: where scenes, crops and the demo index go
        device: auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    """
    folder = generate_world(data_dir.resolve() / "demo" / f"scenes-{scenes}", 2_000_000, scenes)
    db_uri = str(data_dir.resolve() / "demo" / "lancedb")
    common = {"data_dir": data_dir, "db_uri": db_uri, "device": device}
    index_coco(
        source=str(folder),
        detector=str(WORLD_DETECTOR),
        embedder=str(WORLD_EMBEDDER),
        image_size=WORLD_IMAGE_SIZE,
        **common,
    )
    class_name = next((name for name in CLASS_NAMES if name in text.lower()), None)
    truth = {scene.file_name: scene for scene in read_world(folder)}
    answers = {}
    for label, kinds in (("whole images only", "image"), ("whole images + crops", "both")):
        result = query(text=text, k=k, kinds=kinds, render=kinds == "both", **common)
        answers[label] = [(hit, ground_truth(hit, truth, class_name)) for hit in result.hits]
    return answers
