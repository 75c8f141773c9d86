"""The index and embedder a search server answers from: opened once, shared by every request."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
from PIL import Image

from components.errors import StoreMismatchError
from components.models.devices import decide_machine
from components.models.embedder import Embedder, load_embedder
from components.models.loading import check_embedder_available, model_id
from components.ops.preflight import check_classes_known, check_db_exists, check_object_store, resolve_embedder
from components.search.encoding import picture_vector, text_vector
from components.search.ranking import find_hits, search_mode
from components.store.database import Database
from components.store.reader import StoreReader
from schemas.records import CropRecord, ImageRecord
from schemas.results import QueryHit
from schemas.serve import ServeParams
from schemas.settings import Ranking, SearchSettings

# Class names change only when an index run writes; reading them costs a scan of the crops' column.
_CLASSES_KEPT_SECONDS = 5.0
# Image and crop ids are sha256 hex digests: anything else names nothing in an index.
_ID = re.compile(r"[0-9a-f]{64}")


class UnknownId(LookupError):
    """An id that is not an image or a crop of this index (or not an id at all)."""


def is_record_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


class Searcher:
    """One index, read as it changes (each read sees the latest commit), and the embedder of its vectors.

    The embedder loads on first use: a server started before its index exists (`wait_for_index`)
    learns from the index which model to load.
    """

    def __init__(self, params: ServeParams) -> None:
        self.params = params
        self.db_uri = params.db_uri
        check_object_store(params.object_store, params.db_uri)
        if not params.wait_for_index:
            check_db_exists(params.db_uri)
        if params.embedder is not None:
            check_embedder_available(params.embedder)
        # Named, the embedder's vectors are the ones searched, words included; else the index's default's.
        embedder_id = None
        if params.embedder is not None and not params.wait_for_index:
            embedder_id = resolve_embedder(Database(params.db_uri, params.object_store), params.embedder)[0]
        self.reader = StoreReader(params.db_uri, params.object_store, embedder_id)
        self._embedder: Embedder | None = None
        self._embedder_spec: str | None = None
        self._loading = threading.Lock()
        # The tokenizer (Rust) refuses being called from two threads at once: one encode at a time.
        self._encoding = threading.Lock()
        self._known_classes: tuple[float, set[str]] | None = None

    def embedder(self) -> tuple[Embedder, str]:
        """The warm embedder and its spec; StoreMismatchError while no index (or another embedder's) is there."""
        with self._loading:
            if self._embedder is None:
                if self.reader.default_embedder() is None:
                    raise StoreMismatchError(f"no index at {self.db_uri} yet: run `cropsearch index` first")
                if self.params.embedder is not None:
                    embedder_id, spec = resolve_embedder(self.reader, self.params.embedder)
                else:
                    embedder_id = self.reader.searched_embedder()  # type: ignore[assignment]
                    spec = self.reader.embedder_spec(embedder_id)
                # The vectors searched are the loaded model's, also for searches made before it loaded.
                self.reader.search_embedder(embedder_id)
                self._embedder = load_embedder(spec, decide_machine(self.params.device, self.params.precision))
                self._embedder_spec = spec
            assert self._embedder_spec is not None
            return self._embedder, self._embedder_spec

    def check_embedder_named(self, embedder: str | None) -> None:
        """A request may name the embedder, but a server answers with the one it holds warm."""
        if not embedder:
            return
        held = self.embedder()[1]
        if model_id(embedder) != model_id(held):
            raise ValueError(f"embedder: this server encodes with {held!r}, not {embedder!r}")

    def check_classes(self, settings: SearchSettings) -> None:
        """As the query flow does: unknown classes are refused by name."""
        if not settings.classes:
            return
        now = time.monotonic()
        if self._known_classes is None or now - self._known_classes[0] > _CLASSES_KEPT_SECONDS:
            self._known_classes = (now, set(self.reader.class_counts()))
        check_classes_known(settings.classes, self._known_classes[1])

    def _encoded_search(
        self, encode: Callable[[Embedder], np.ndarray], settings: SearchSettings, text: str | None = None
    ) -> tuple[list[QueryHit], Ranking]:
        ranking = search_mode(settings, text is not None, self.reader)
        self.check_classes(settings)
        vector = None
        if ranking != "text":  # words alone are searched without the model
            model, _ = self.embedder()
            with self._encoding:
                vector = encode(model)
        return find_hits(self.reader, vector, settings.ranked_by(ranking), text), ranking

    def search_text(self, text: str, settings: SearchSettings) -> tuple[list[QueryHit], Ranking]:
        """The hits for a text, and what ranked them (`auto` resolved)."""
        return self._encoded_search(lambda model: text_vector(model, text), settings, text)

    def search_picture(
        self, picture: Image.Image, box: Sequence[float] | None, settings: SearchSettings
    ) -> tuple[list[QueryHit], Ranking]:
        return self._encoded_search(lambda model: picture_vector(model, picture, box), settings)

    def similar(self, record_id: str, settings: SearchSettings) -> tuple[list[QueryHit], Ranking]:
        """More like a stored image or crop, from its stored vector (nothing is encoded again)."""
        ranking = search_mode(settings, False, self.reader)
        vector = self.reader.stored_vector(record_id) if is_record_id(record_id) else None
        if vector is None and (crop := self.reader.crops_by_id([record_id]).get(record_id)) is not None:
            vector = self.reader.stored_vector(crop.image_id)  # nearly the whole photo: the photo's stands for it
        if vector is None:
            raise UnknownId(f"no image or crop {record_id!r} in the index")
        self.check_classes(settings)
        return find_hits(self.reader, vector, settings.ranked_by(ranking)), ranking

    def image(self, image_id: str) -> ImageRecord:
        found = self.reader.images_by_id([image_id]) if is_record_id(image_id) else {}
        if image_id not in found:
            raise UnknownId(f"no image {image_id!r} in the index")
        return found[image_id]

    def crop(self, crop_id: str) -> CropRecord:
        found = self.reader.crops_by_id([crop_id]) if is_record_id(crop_id) else {}
        if crop_id not in found:
            raise UnknownId(f"no crop {crop_id!r} in the index")
        return found[crop_id]

    def crops_of(self, image_id: str) -> list[CropRecord]:
        self.image(image_id)
        return self.reader.crops_of_image(image_id)

    def summary(self) -> dict[str, object]:
        """What the page shows about the index: counts, the embedder, classes with their crop counts."""
        counts = self.reader.counts()
        last: datetime | None = self.reader.last_write()
        return {
            "db": self.db_uri,
            "images": counts["images"],
            "crops": counts["crops"],
            "embeddings": counts["embeddings"],
            "embedder": self.reader.searched_embedder(),
            "classes": self.reader.class_counts(),
            "region_sources": self.reader.region_source_counts(),
            "last_write": last.isoformat() if last else None,
        }
