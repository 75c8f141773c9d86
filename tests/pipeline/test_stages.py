"""The per-chunk stages on their own, with deterministic plug-in models and a real LanceDB folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.models.devices import decide_machine
from components.models.embedder import Embedder
from components.pipeline import stages
from components.pipeline.images import register_images
from components.store.writer import StoreWriter
from schemas.params import ChunkConfig
from schemas.records import CropRecord, ImageRecord
from schemas.settings import BatchSettings, DetectionSettings, ObjectStoreSettings
from tests.plugins import ColourBlobDetector, CountingColourBlobDetector, MeanAndSpreadEmbedder, MeanColourEmbedder
from tests.records import hex_id


def picture(path: Path, box: tuple[int, int, int, int] | None, colour: tuple[int, int, int] = (230, 20, 20)) -> Path:
    pixels = np.full((90, 120, 3), 128, dtype=np.uint8)
    if box:
        x1, y1, x2, y2 = box
        pixels[y1:y2, x1:x2] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def index(store: StoreWriter, images: list[ImageRecord], crops_dir: Path, signature: str = "sig") -> None:
    """Model work and write over `images`, as the flow does for one chunk."""
    work = blob_model_stage(images, crops_dir, detect_batch_size=2, embed_batch_size=2)
    stages.write_stage(store, images, work.crops, work.embeddings, signature, {"mean": "mean"})


@pytest.fixture
def store(tmp_path: Path) -> StoreWriter:
    return StoreWriter(str(tmp_path / "db"))


def test_stages_produce_linked_images_crops_and_vectors(tmp_path: Path, store: StoreWriter) -> None:
    paths = [picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", None)]
    images, _ = register_images(paths, "t")
    work = blob_model_stage(images, tmp_path / "crops", detect_batch_size=1, embed_batch_size=8)
    assert work.model_batches == 3  # two photos detected alone; whole images and their crops share one batch
    (crop,) = work.crops
    assert (crop.x1, crop.y1, crop.x2, crop.y2, crop.class_name) == (10, 10, 40, 30, "red")
    assert Image.open(crop.uri).size == (30, 20)
    kinds = {(e.kind, e.image_id) for e in work.embeddings}
    assert kinds == {("image", images[0].image_id), ("image", images[1].image_id), ("crop", images[0].image_id)}
    whole_a = next(e for e in work.embeddings if e.id == images[0].image_id)
    assert whole_a.class_names == ["red"]

    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"})
    stored = store.images_by_id([image.image_id for image in images])
    assert stored[images[0].image_id].caption == "this image contains 1 red"
    assert stored[images[1].image_id].caption == "no objects detected"
    assert {record.index_signature for record in stored.values()} == {"sig"}


def test_a_crop_nearly_the_whole_photo_keeps_its_row_file_and_class_but_no_vector(
    tmp_path: Path, store: StoreWriter
) -> None:
    close_up = picture(tmp_path / "close-up.png", (2, 2, 118, 88))  # 116 x 86 of 120 x 90: 92.6% of the photo
    images, _ = register_images([close_up, picture(tmp_path / "small.png", (10, 10, 40, 30))], "t")
    work = blob_model_stage(images, tmp_path / "crops", detect_batch_size=2, embed_batch_size=8)
    big, small = sorted(work.crops, key=lambda crop: -crop.area_fraction)
    assert big.area_fraction == pytest.approx(116 * 86 / (120 * 90)) and Path(big.uri).is_file()
    assert {e.id for e in work.embeddings} == {images[0].image_id, images[1].image_id, small.crop_id}
    assert next(e for e in work.embeddings if e.id == images[0].image_id).class_names == ["red"]
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"})
    assert store.images_by_id([images[0].image_id])[images[0].image_id].caption == "this image contains 1 red"
    assert store.counts() == {"images": 2, "crops": 2, "embeddings": 3}

    # A higher value asks for the big crop's vector: its photo alone is indexed again.
    assert stages.plan_stage(store, images, "sig", "t", whole_frame_area=1.0).detect == [images[0]]
    # Marked not indexed before its model work: a run killed mid re-index redoes it.
    assert store.images_by_id([images[0].image_id])[images[0].image_id].index_signature == ""
    work = blob_model_stage(
        [images[0]], tmp_path / "crops", detect_batch_size=2, embed_batch_size=8,
        detection=DetectionSettings(whole_frame_area=1.0),
    )  # fmt: skip
    stages.write_stage(store, [images[0]], work.crops, work.embeddings, "sig", {"mean": "mean"})
    assert store.counts() == {"images": 2, "crops": 2, "embeddings": 4}
    assert stages.plan_stage(store, images, "sig", "t", whole_frame_area=1.0).detect == []

    # Back to the default: the plan drops that vector, and nothing needs the models.
    assert stages.plan_stage(store, images, "sig", "t", whole_frame_area=0.9).detect == []
    assert store.counts() == {"images": 2, "crops": 2, "embeddings": 3}


def test_a_file_that_stops_decoding_is_skipped_by_the_stage(tmp_path: Path) -> None:
    path = picture(tmp_path / "a.png", (10, 10, 40, 30))
    images, _ = register_images([path], "t")
    path.write_text("gone bad")
    work = blob_model_stage(images, tmp_path / "crops", detect_batch_size=1, embed_batch_size=8)
    assert work.crops == work.embeddings == [] and [item.path for item in work.skipped] == [images[0].uri]


def test_a_photo_overwritten_after_registering_is_skipped_not_stored_under_its_old_id(tmp_path: Path) -> None:
    """Issue 25, item 7: the new bytes' crops and vectors were stored under the old bytes' id, for good."""
    paths = [picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", (50, 20, 90, 60))]
    images, _ = register_images(paths, "t")
    picture(paths[1], (5, 5, 25, 25), colour=(20, 20, 230))  # another valid photo at the same path
    work = blob_model_stage(images, tmp_path / "crops", detect_batch_size=1, embed_batch_size=8)
    assert [(item.path, "changed since it was registered" in item.reason) for item in work.skipped] == [
        (images[1].uri, True)
    ]
    assert {e.image_id for e in work.embeddings} == {images[0].image_id}
    again, _ = register_images(paths, "t")  # the next run registers the new bytes under their own id
    assert again[1].image_id != images[1].image_id
    assert {e.image_id for e in blob_model_stage(again, tmp_path / "crops", 1, 8).embeddings} == {
        record.image_id for record in again
    }


def test_plan_skips_indexed_images_and_follows_moves_and_edits(tmp_path: Path, store: StoreWriter) -> None:
    a = picture(tmp_path / "photos/a.png", (10, 10, 40, 30))
    b = picture(tmp_path / "photos/b.png", (50, 20, 90, 60), colour=(20, 20, 230))
    images, _ = register_images([a, b], "t")
    assert stages.plan_stage(store, images, "sig", "t").detect == images
    index(store, images, tmp_path / "crops")
    assert stages.plan_stage(store, images, "sig", "t").detect == []
    assert stages.plan_stage(store, images, "other-settings", "t").detect == images

    moved = tmp_path / "photos/renamed.png"
    shutil.move(a, moved)
    images, _ = register_images([moved, b], "t")
    assert stages.plan_stage(store, images, "sig", "t").detect == []
    assert store.images_by_id([images[0].image_id])[images[0].image_id].uri == str(moved.resolve())

    picture(b, (5, 5, 30, 30), colour=(20, 230, 20))  # same path, new bytes
    images, _ = register_images([moved, b], "t")
    todo = stages.plan_stage(store, images, "sig", "t").detect
    assert [record.uri for record in todo] == [str(b.resolve())]
    assert store.counts() == {"images": 1, "crops": 1, "embeddings": 2}  # the old b and its crop are gone
    index(store, todo, tmp_path / "crops")
    assert store.counts() == {"images": 2, "crops": 2, "embeddings": 4}


def test_every_embedder_embeds_the_same_pictures_as_it_would_alone(tmp_path: Path) -> None:
    paths = [picture(tmp_path / f"{n}.png", (5 + 9 * n, 5, 50, 40 + n), colour=(30 * n, 200, 20)) for n in range(3)]
    images = register_images(paths, "t")[0]
    both = blob_model_stage(
        images, tmp_path / "crops", 2, 4, embedders={"mean": MeanColourEmbedder(), "spread": MeanAndSpreadEmbedder()}
    )
    assert both.model_batches == 2 + 2 * 2  # the detector's two, and each embedder's two of 6 pictures
    for embedder_id, alone in (("mean", MeanColourEmbedder()), ("spread", MeanAndSpreadEmbedder())):
        single = blob_model_stage(images, tmp_path / "crops", 2, 4, embedders={embedder_id: alone})
        assert [(e.id, e.kind, e.vector.tolist()) for e in both.embeddings if e.model == embedder_id] == [
            (e.id, e.kind, e.vector.tolist()) for e in single.embeddings
        ]
        assert both.crops == single.crops


def test_stored_crops_are_embedded_as_they_were_cut_without_the_detector_or_new_files(
    tmp_path: Path, store: StoreWriter
) -> None:
    paths = [picture(tmp_path / f"{n}.png", (5 + 9 * n, 5, 50, 40 + n), colour=(30 * n, 200, 20)) for n in range(3)]
    images = register_images([*paths, picture(tmp_path / "plain.png", None)], "t")[0]
    index(store, images, tmp_path / "crops")
    assert stages.plan_stage(store, images, "sig", "t", embedder_ids=["mean"]).embed == {}
    planned = stages.plan_stage(store, images, "sig", "t", embedder_ids=["mean", "spread"])
    assert (planned.detect, planned.embed) == ([], {"spread": images})

    detector = CountingColourBlobDetector()
    before = CountingColourBlobDetector.batches
    added = blob_model_stage(
        images, tmp_path / "no-files", 2, 4, embedders={"spread": MeanAndSpreadEmbedder()},
        stored_crops=store.crops_of_images([record.image_id for record in images]), detector=detector,
    )  # fmt: skip
    assert CountingColourBlobDetector.batches == before and added.detector_batches == 0
    assert added.crops == [] and not (tmp_path / "no-files").exists()
    fresh = blob_model_stage(images, tmp_path / "fresh", 2, 4, embedders={"spread": MeanAndSpreadEmbedder()})
    assert [(e.id, e.vector.tolist()) for e in added.embeddings] == [
        (e.id, e.vector.tolist()) for e in fresh.embeddings
    ]

    stages.write_vectors_stage(store, added.embeddings, {"spread": "spread"})
    assert stages.plan_stage(store, images, "sig", "t", embedder_ids=["mean", "spread"]).embed == {}
    assert [held.vectors for held in store.indexed_embedders()] == [7, 7]

    # Photos written again by a run without "spread" (one that read the embedders before it was added)
    # lose their "spread" rows, so the next plan embeds them with it instead of trusting older crops' vectors.
    index(store, images[:2], tmp_path / "crops")
    assert stages.plan_stage(store, images, "sig", "t", embedder_ids=["mean", "spread"]).embed == {"spread": images[:2]}


def test_an_older_signature_of_the_index_is_rewritten_without_model_work(tmp_path: Path, store: StoreWriter) -> None:
    images = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", None)], "t")[0]
    index(store, images, tmp_path / "crops", signature="older")
    planned = stages.plan_stage(store, images, "sig", "t", embedder_ids=["mean"], legacy_signatures=["older"])
    assert (planned.detect, planned.embed, planned.upgraded) == ([], {}, 2)
    assert {record.index_signature for record in store.images_by_id([i.image_id for i in images]).values()} == {"sig"}
    assert stages.plan_stage(store, images, "sig", "t", legacy_signatures=["older"]).upgraded == 0
    assert stages.plan_stage(store, images, "sig", "t", legacy_signatures=["other"]).detect == []

    # Asked for proposals or tiles, such an index knew none: it is rewritten as the detector's alone, and re-cut.
    older = StoreWriter(str(tmp_path / "older"))
    index(older, images, tmp_path / "crops", signature="older")
    planned = stages.plan_stage(older, images, "sig+tiles", "t", legacy_signatures=["older"], detector_signature="sig")
    assert (planned.detect, planned.recut, planned.upgraded) == ([], images, 2)
    written = older.images_by_id([i.image_id for i in images]).values()
    assert {(record.index_signature, record.detector_signature) for record in written} == {("sig", "sig")}


def test_a_photo_whose_detector_boxes_stand_is_recut_and_any_other_is_detected(
    tmp_path: Path, store: StoreWriter
) -> None:
    images = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", None)], "t")[0]
    work = blob_model_stage(images, tmp_path / "crops", 2, 2)
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"}, detector_signature="boxes")
    # Proposals or tiles asked for: a new index signature, the same detector signature.
    planned = stages.plan_stage(store, images, "sig+tiles", "t", embedder_ids=["mean"], detector_signature="boxes")
    assert (planned.detect, planned.recut) == ([], images)
    assert stages.plan_stage(store, images, "sig+tiles", "t", detector_signature="other").detect == images
    assert stages.plan_stage(store, images, "sig+tiles", "t").detect == images  # no detector signature: none stands
    # An embedder that has no vector of the photos: their stored crops lack it too, so they are detected.
    lacking = stages.plan_stage(store, images, "x", "t", embedder_ids=["mean", "spread"], detector_signature="boxes")
    assert (lacking.detect, lacking.recut) == (images, [])

    # An index made before detector signatures: its index signature is the detector's when nothing else was asked.
    old = tmp_path / "old"
    older = StoreWriter(str(tmp_path / "older"))
    work = blob_model_stage(images, old, 2, 2)
    stages.write_stage(older, images, work.crops, work.embeddings, "boxes", {"mean": "mean"})
    assert {r.detector_signature for r in older.images_by_id([i.image_id for i in images]).values()} == {""}
    assert stages.plan_stage(older, images, "sig+tiles", "t", detector_signature="boxes").recut == images


def test_a_recut_photo_gains_only_its_new_regions_and_loses_those_no_longer_asked_for(
    tmp_path: Path, store: StoreWriter
) -> None:
    images = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", None)], "t")[0]
    crops = tmp_path / "crops"
    work = blob_model_stage(images, crops, 2, 2)
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"}, crops_uri=str(crops))
    [named] = work.crops
    stored = lambda: store.crops_of_images([record.image_id for record in images])  # noqa: E731

    counting = CountingColourBlobDetector()
    before = CountingColourBlobDetector.batches
    tiled = blob_model_stage(images, crops, 2, 2, detection=DetectionSettings(tiles=[2]), stored_crops=stored(),
                             detector=counting, recut=True)  # fmt: skip
    assert CountingColourBlobDetector.batches == before and tiled.detector_batches == 0
    assert {crop.source for crop in tiled.crops} == {"tile"} and len(tiled.crops) == 2 * 4
    assert {e.id for e in tiled.embeddings} == {crop.crop_id for crop in tiled.crops}  # no photo's vector again
    assert [c.crop_id for c in tiled.recut[images[0].image_id] if c.source == "detector"] == [named.crop_id]
    assert all(Path(crop.uri).exists() for crop in tiled.crops)
    stages.write_stage(
        store, images, tiled.crops, tiled.embeddings, "sig+tiles", {"mean": "mean"}, crops_uri=str(crops),
        detector_signature="boxes", recut=tiled.recut,
    )  # fmt: skip
    written = store.images_by_id([record.image_id for record in images])
    assert {(r.index_signature, r.detector_signature) for r in written.values()} == {("sig+tiles", "boxes")}
    assert written[images[0].image_id].caption == "this image contains 1 red"  # the detector's classes, as before
    assert store.counts() == {"images": 2, "crops": 1 + 8, "embeddings": 2 + 1 + 8}

    # The tiles stored already are not cut again; dropped, they go with their vectors and files.
    again = blob_model_stage(images, crops, 2, 2, detection=DetectionSettings(tiles=[2]), stored_crops=stored(),
                             recut=True)  # fmt: skip
    assert again.crops == again.embeddings == [] and again.model_batches == 0
    plain = blob_model_stage(images, crops, 2, 2, stored_crops=stored(), recut=True)
    stages.write_stage(
        store, images, plain.crops, plain.embeddings, "sig", {"mean": "mean"}, crops_uri=str(crops),
        detector_signature="boxes", recut=plain.recut,
    )  # fmt: skip
    assert store.counts() == {"images": 2, "crops": 1, "embeddings": 3}
    assert [path.stem for path in crops.rglob("*.jpg")] == [named.crop_id]


class _CropsWriteFails(StoreWriter):
    def upsert_crops(self, records: list[CropRecord]) -> None:
        raise OSError("killed")


def test_a_photo_detected_again_is_unmarked_before_its_crops_change(tmp_path: Path) -> None:
    """Killed half way through replacing its crops, it must not pass for a photo whose stored boxes stand."""
    images = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30))], "t")[0]
    store = StoreWriter(str(tmp_path / "db"))
    work = blob_model_stage(images, tmp_path / "crops", 2, 2)
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"}, detector_signature="boxes")
    assert stages.plan_stage(store, images, "sig+tiles", "t", detector_signature="boxes").recut == images
    with pytest.raises(OSError, match="killed"):
        killed = _CropsWriteFails(str(tmp_path / "db"))
        stages.write_stage(killed, images, work.crops, work.embeddings, "new", {"mean": "mean"}, detector_signature="x")
    planned = stages.plan_stage(store, images, "sig+tiles", "t", detector_signature="boxes")
    assert (planned.detect, planned.recut) == (images, [])


def blob_model_stage(
    images: list[ImageRecord],
    crops_dir: Path,
    detect_batch_size: int,
    embed_batch_size: int,
    decode_threads: int = 1,
    embedder: Embedder | None = None,
    detection: DetectionSettings | None = None,
    embedders: dict[str, Embedder] | None = None,
    stored_crops: dict[str, list[CropRecord]] | None = None,
    detector: ColourBlobDetector | None = None,
    recut: bool = False,
) -> stages.ChunkWork:
    """`model_stage` with the colour-blob detector, default settings, and the mean-colour embedder, `embedder`
    (as "mean") or `embedders`."""
    batching = BatchSettings(
        detect_batch_size=detect_batch_size, embed_batch_size=embed_batch_size, decode_threads=decode_threads
    )
    machine = decide_machine("cpu", "fp32", batching)
    models = stages.ChunkModels(
        detector or ColourBlobDetector(), "blob", embedders or {"mean": embedder or MeanColourEmbedder()}, machine
    )
    config = ChunkConfig(
        detector="plugin:tests.plugins:colour_blob_detector",
        embedders=["plugin:tests.plugins:mean_colour_embedder"],
        device="cpu",
        precision="fp32",
        detection=detection or DetectionSettings(),
        batching=batching,
        crops_uri=str(crops_dir),
        object_store=ObjectStoreSettings(),
    )
    return stages.model_stage(images, models, config, stored_crops, recut)


def test_model_stage_runs_detect_crop_embed_and_reports_a_bad_file_once(tmp_path: Path) -> None:
    paths = [picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", (50, 20, 90, 60))]
    images, _ = register_images(paths, "t")
    paths[1].write_bytes(b"not an image any more")
    work = blob_model_stage(images, tmp_path / "crops", detect_batch_size=1, embed_batch_size=8)
    assert [item.path for item in work.skipped] == [images[1].uri]  # reported once; no model saw it
    assert [crop.image_id for crop in work.crops] == [images[0].image_id]
    assert {(e.kind, e.image_id) for e in work.embeddings} == {
        ("image", images[0].image_id),
        ("crop", images[0].image_id),
    }
    assert set(work.seconds) == {"detect", "embed"} and work.model_batches == 2


def test_several_decode_threads_give_the_same_records_in_the_same_order(tmp_path: Path) -> None:
    colours = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]
    paths = [
        picture(tmp_path / f"photos/{n:02d}.png", (5 + n, 5, 40 + n, 30 + n % 7), colour=colours[n % 3])
        for n in range(23)
    ]
    paths[7].write_bytes(b"broken")
    images = register_images(paths[:7] + paths[8:], "t")[0]
    images.insert(7, images[0].model_copy(update={"uri": str(paths[7].resolve()), "image_id": "7" * 64}))

    def model_work(threads: int) -> stages.ChunkWork:
        return blob_model_stage(images, tmp_path / f"crops-{threads}", 4, 5, decode_threads=threads)

    one, four = model_work(1), model_work(4)
    assert [item.path for item in four.skipped] == [item.path for item in one.skipped] == [str(paths[7].resolve())]
    assert [(c.crop_id, Path(c.uri).name) for c in four.crops] == [(c.crop_id, Path(c.uri).name) for c in one.crops]
    assert len(one.crops) == 22
    assert [(e.id, e.vector.tolist()) for e in four.embeddings] == [(e.id, e.vector.tolist()) for e in one.embeddings]
    assert four.model_batches == one.model_batches


def test_clip_vectors_from_joined_batches_match_each_picture_embedded_alone(tmp_path: Path, tiny_clip: Path) -> None:
    from components.models.embedder import load_embedder

    embedder = load_embedder(str(tiny_clip), decide_machine("cpu", "fp32"))
    paths = [picture(tmp_path / f"{n}.png", (5 + 3 * n, 5, 50, 40 + n), colour=(30 * n, 200, 20)) for n in range(5)]
    images = register_images(paths, "t")[0]
    # Batches of 4 cut across the groups of an image and its crop, leaving remainders to carry over.
    work = blob_model_stage(images, tmp_path / "crops", 2, embed_batch_size=4, decode_threads=3, embedder=embedder)
    uri_of = {image.image_id: image.uri for image in images} | {crop.crop_id: crop.uri for crop in work.crops}
    picture_of = {key: Image.open(uri).convert("RGB") for key, uri in uri_of.items()}  # the files a hit shows
    assert len(work.embeddings) == len(picture_of) == 10 and work.model_batches == 3 + 3
    for record in work.embeddings:
        key = record.crop_id or record.image_id
        (alone,) = embedder.embed_images([picture_of[key]])
        # fp32 on one CPU, the same pictures batched or alone: only the summation order differs, which
        # moves a unit vector's entries by ~1e-7; 1e-5 is a hundred times that, and far below any real change.
        assert np.allclose(record.vector, alone, atol=1e-5), key


def planted_crop(parent_id: str, uri: str) -> CropRecord:
    """A crop row that names any file: a database a run did not write (planted, unzipped) may hold one."""
    return CropRecord(
        crop_id=hex_id(parent_id + uri),
        image_id=parent_id,
        detector="blob",
        class_id=0,
        class_name="red",
        confidence=0.9,
        x1=1,
        y1=1,
        x2=5,
        y2=5,
        area_fraction=0.01,
        uri=uri,
    )


def victims(folder: Path) -> list[Path]:
    """Files a planted crop row names outside the crop store: directly, through `..`, and beside its name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "secret.txt", folder / "crops-sibling" / "notes.txt"]
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("keep me")
    return files


def test_a_replaced_photos_crop_files_go_but_a_planted_rows_files_outside_the_crop_store_stay(
    tmp_path: Path, store: StoreWriter
) -> None:
    """Issue 40, item 3: an index run deleted any file a crop row of a changed photo named."""
    crops = tmp_path / "crops"
    photo = picture(tmp_path / "photos/a.png", (10, 10, 40, 30))
    images, _ = register_images([photo], "t")
    index(store, images, crops)
    (own,) = store.crops_of_images([images[0].image_id])[images[0].image_id]
    secret, sibling = victims(tmp_path / "victim")
    planted = [str(secret), f"{crops}/../victim/crops-sibling/notes.txt", str(sibling)]
    store.upsert_crops([planted_crop(images[0].image_id, uri) for uri in planted])

    picture(photo, (50, 20, 90, 60), colour=(20, 20, 230))  # the same path, new bytes: its old rows go
    images, _ = register_images([photo], "t")
    stages.plan_stage(store, images, "sig", "t", crops_uri=str(crops))
    assert store.counts()["crops"] == 0
    assert not Path(own.uri).exists()  # the run's own crop file went with its row
    assert secret.read_text() == sibling.read_text() == "keep me"


def test_a_reindexed_photos_stale_crop_rows_delete_only_files_in_the_crop_store(
    tmp_path: Path, store: StoreWriter
) -> None:
    crops = tmp_path / "crops"
    images, _ = register_images([picture(tmp_path / "photos/a.png", (10, 10, 40, 30))], "t")
    work = blob_model_stage(images, crops, detect_batch_size=1, embed_batch_size=4)
    stale_own = crops / "ab" / "stale.jpg"
    stale_own.parent.mkdir(parents=True)
    stale_own.write_bytes(b"an older crop of this photo")
    (secret, _) = victims(tmp_path / "victim")
    store.upsert_crops(
        [planted_crop(images[0].image_id, str(stale_own)), planted_crop(images[0].image_id, str(secret))]
    )
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"}, crops_uri=str(crops))
    assert not stale_own.exists() and secret.read_text() == "keep me"
    assert [crop.uri for crop in store.crops_of_images([images[0].image_id])[images[0].image_id]] == [
        crop.uri for crop in work.crops
    ]


def test_tiles_alone_are_crops_with_files_and_vectors_that_name_nothing_and_run_no_model(
    tmp_path: Path, store: StoreWriter
) -> None:
    images, _ = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30))], "t")
    tiles_only = DetectionSettings(max_detections=0, tiles=[2], proposals=0)
    work = blob_model_stage(images, tmp_path / "crops", 1, 8, detection=tiles_only)
    assert work.detector_batches == 0 and work.model_batches == 1  # one embedder batch: the photo and its 4 tiles
    assert [(c.x1, c.y1, c.x2, c.y2) for c in work.crops] == [
        (0, 0, 69, 51),
        (51, 0, 120, 51),
        (0, 39, 69, 90),
        (51, 39, 120, 90),
    ]
    assert {(c.source, c.detector, c.class_name, c.class_id) for c in work.crops} == {("tile", "tiles", "", -1)}
    assert all(Image.open(c.uri).size == (c.x2 - c.x1, c.y2 - c.y1) for c in work.crops)
    assert {tuple(e.class_names) for e in work.embeddings} == {()} and len(work.embeddings) == 5
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"mean": "mean"})
    assert store.images_by_id([images[0].image_id])[images[0].image_id].caption == "no objects detected"
    assert store.class_counts() == {}  # the class facet lists objects, and a tile is none


def test_tiles_beside_the_detector_leave_its_crops_as_they_were_and_every_row_records_its_source(
    tmp_path: Path, store: StoreWriter
) -> None:
    images, _ = register_images([picture(tmp_path / "a.png", (10, 10, 40, 30)), picture(tmp_path / "b.png", None)], "t")
    alone = blob_model_stage(images, tmp_path / "alone", 2, 8)
    both = blob_model_stage(images, tmp_path / "both", 2, 8, detection=DetectionSettings(tiles=[2, 3]))
    assert both.detector_batches == alone.detector_batches == 1  # tiles add no forward pass
    detected = [crop for crop in both.crops if crop.source == "detector"]
    assert [(c.crop_id, c.x1, c.y1, c.x2, c.y2, c.class_name) for c in detected] == [
        (c.crop_id, c.x1, c.y1, c.x2, c.y2, c.class_name) for c in alone.crops
    ]  # the same ids: an index that adds tiles keeps its detector crops' rows, files and vectors
    assert len([crop for crop in both.crops if crop.source == "tile"]) == 2 * (4 + 9)
    whole = {e.id: e.class_names for e in both.embeddings if e.kind == "image"}
    assert whole == {images[0].image_id: ["red"], images[1].image_id: []}  # the photo's classes: tiles add none

    stages.write_stage(store, images, both.crops, both.embeddings, "sig", {"mean": "mean"})
    stored = store.crops_of_images([image.image_id for image in images])
    assert sorted(crop.source for crops in stored.values() for crop in crops) == ["detector"] + ["tile"] * 26
    column = store._open("crops").to_arrow().select(["crop_id", "source"]).to_pylist()
    assert {row["crop_id"]: row["source"] for row in column} == {c.crop_id: c.source for c in both.crops}
    captions = {record.image_id: record.caption for record in store.images_by_id([i.image_id for i in images]).values()}
    assert captions == {images[0].image_id: "this image contains 1 red", images[1].image_id: "no objects detected"}
    assert store.class_counts() == {"red": 1}
