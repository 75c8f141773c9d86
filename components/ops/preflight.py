"""Checks that let a run fail in seconds, naming the culprit, before any work starts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components.errors import CropsearchError, ModelUnavailableError, SourceError, StoreMismatchError
from components.models.loading import (
    check_detector_available,
    check_embedder_available,
    detector_id_of,
    model_id,
    portable_spec,
)
from components.models.vocabulary import load_prompt_embeddings
from components.pipeline.images import ImageDecodeError, check_decodes
from components.pipeline.sources import check_url_reachable, classify_source
from components.search.ranking import search_mode
from components.store.database import Database
from schemas.params import DEFAULT_EMBEDDER, EvalParams, IndexParams, IndexRecipe, QueryParams
from schemas.settings import ObjectStoreSettings, Ranking, is_object_store_uri

_LOCAL_HINT = "use --source with a local folder or .zip of images"


def download_path(source: str, data_dir: Path) -> Path:
    """Where a URL source is downloaded to: a folder per URL, so two sources named `photos.zip` never mix."""
    name = Path(urlparse(source).path).name or "download.zip"
    return data_dir / "downloads" / hashlib.sha256(source.encode()).hexdigest()[:16] / name


def _check_db_location(db_uri: str) -> None:
    if "://" not in db_uri and Path(db_uri).is_file():
        raise ValueError(f"--db {db_uri!r} is a file; it must be a folder (created if missing) or a URI")


def check_db_exists(db_uri: str) -> None:
    """Commands that only read (query, compact) never create a database: a mistyped --db is an error."""
    _check_db_location(db_uri)
    if "://" not in db_uri and not Path(db_uri).is_dir():
        raise StoreMismatchError(f"no index at {db_uri}: run `cropsearch index` first, or check --db")


def check_query_image(path: Path) -> None:
    """A query image must be an image file: not a folder, not missing, and one that decodes."""
    if path.is_dir():
        raise ValueError(f"query image {str(path)!r} is a folder; give an image file")
    if not path.is_file():
        raise ValueError(f"query image {str(path)!r} does not exist")
    try:
        check_decodes(path)
    except ImageDecodeError as error:
        raise ValueError(f"query image {str(path)!r}: {error}") from error


def _check_reachable(source: str, data_dir: Path, hint: str = _LOCAL_HINT) -> None:
    if classify_source(source) == "url" and not download_path(source, data_dir).is_file():
        try:
            check_url_reachable(source)
        except SourceError as error:
            raise SourceError(f"{error}; {hint}") from error


def _check_source(params: IndexParams) -> None:
    _check_reachable(params.source, params.data_dir)


def _collect(checks: list[tuple[Callable[[Any], object], Any]]) -> None:
    """Run every check; raise one error naming all that failed (so one run shows every flag to change)."""
    problems = []
    for check, argument in checks:
        try:
            check(argument)
        except CropsearchError as error:
            problems.append(error)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise CropsearchError("cannot start:\n  - " + "\n  - ".join(map(str, problems)))


def check_eval_can_start(params: EvalParams) -> None:
    """Everything an evaluation downloads or loads, checked at once before any work."""
    checks: list[tuple[Callable[[Any], object], Any]] = [
        (check_detector_available, params.resolved_detector),
        *((check_embedder_available, embedder) for embedder in params.resolved_embedders),
    ]
    if params.benchmark == "coco":
        hint = "use --source and --annotations with local copies, or --benchmark world to evaluate offline"
        checks[:0] = [
            (lambda source: _check_reachable(source, params.data_dir, hint), params.source),
            (lambda source: _check_reachable(source, params.data_dir, hint), params.annotations),
        ]
    _collect(checks)


def _existing_index(params: IndexParams) -> Database | None:
    """The index `params` name, checked; None where no local index exists yet."""
    _check_db_location(params.resolved_db_uri)
    check_object_store(params.object_store, params.resolved_db_uri, params.resolved_crops_uri)
    if "://" not in params.resolved_db_uri and not Path(params.resolved_db_uri).is_dir():
        return None
    return Database(params.resolved_db_uri, params.object_store)


def index_embedders(params: IndexParams) -> dict[str, str]:
    """The embedders whose vectors the index holds, id -> where each was loaded from (read, nothing loaded)."""
    store = _existing_index(params)
    return {} if store is None else store.embedder_specs()


def _check_vocabulary(vocabulary: str | None) -> None:
    """A vocabulary file must exist and read as one before any work (its detector checks it fits, as it loads)."""
    if vocabulary is None:
        return
    try:
        load_prompt_embeddings(Path(vocabulary).expanduser())
    except ValueError as error:
        raise ModelUnavailableError(f"{error}; save one with `cropsearch vocabulary`") from None


def index_recipe(params: IndexParams) -> IndexRecipe | None:
    """How the index `params` name was last made (read, nothing loaded); None for a new index or an older one."""
    store = _existing_index(params)
    return None if store is None else store.index_recipe()


def recipe_of_run(params: IndexParams) -> IndexRecipe:
    """How this run makes the index, as it is recorded (local paths absolute: they name the same files from
    any working directory)."""
    vocabulary = None if params.vocabulary is None else portable_spec(params.vocabulary)
    return IndexRecipe(
        detector=portable_spec(params.resolved_detector), vocabulary=vocabulary, detection=params.detection
    )


def with_the_index_recipe(given: Mapping[str, Any]) -> tuple[IndexParams, dict[str, tuple[object, object]]]:
    """A command line's index parameters, with each recorded setting it does not name taken from the index,
    and what the run then makes differently from how the index was made (flat field -> (was, now)).

    A vocabulary belongs to its detector: naming another detector leaves the index's vocabulary out.
    """
    params = IndexParams(**given)
    recipe = index_recipe(params)
    if recipe is None:
        return params, {}
    recorded = recipe.flat()
    if "detector" in given:
        recorded.pop("vocabulary")
    params = IndexParams(**{**recorded, **given})
    return params, recipe.changes_to(recipe_of_run(params))


def describe_changes(changes: Mapping[str, tuple[object, object]]) -> str:
    """`with_the_index_recipe`'s changes as one line a person reads."""

    def shown(value: object) -> str:
        if isinstance(value, list):
            return ",".join(map(str, value)) or "none"
        return "none" if value is None else str(value)

    listed = "; ".join(f"{name.replace('_', '-')} {shown(was)} -> {shown(now)}" for name, (was, now) in changes.items())
    return f"changes from how the index was made: {listed} (what they change is indexed again)"


def _check_recorded_embedder(recorded: tuple[str, str]) -> None:
    """An embedder the index holds must still load as the same weights: every new photo is embedded by it too."""
    embedder_id, spec = recorded
    drop = f"or drop its vectors with `cropsearch models --drop {embedder_id}`"
    try:
        check_embedder_available(spec)
    except CropsearchError as error:
        raise type(error)(f"the index's embedder {embedder_id!r} cannot be loaded: {error}; {drop}") from error
    if model_id(spec) != embedder_id:
        raise StoreMismatchError(
            f"the index's embedder {embedder_id!r} now loads from {spec!r} as {model_id(spec)!r}: its weights "
            f"changed in place; put them back, or add the new ones with --embedder and {drop}"
        )


def check_index_can_start(params: IndexParams, recorded: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Validate source, models and database; return the detector id and the run's embedders (id -> spec).

    The run's embedders are those the index holds (`recorded`, from `index_embedders`) and the one
    `--embedder` adds (`openai/clip-vit-base-patch32` for an index with none). Source and models
    are all checked before failing, so an offline user learns every flag to change from one run
    instead of one per run.
    """
    asked = params.embedder or (None if recorded else DEFAULT_EMBEDDER)
    checks: list[tuple[Callable[[Any], object], Any]] = [
        (_check_source, params),
        (check_detector_available, params.resolved_detector),
        (_check_vocabulary, params.vocabulary),
        *((_check_recorded_embedder, pair) for pair in recorded.items()),
    ]
    if asked is not None:
        checks.append((check_embedder_available, asked))
    _collect(checks)
    embedders = dict(recorded)
    if asked is not None:
        embedders[model_id(asked)] = portable_spec(asked)
    return detector_id_of(params.resolved_detector, params.vocabulary), embedders


def check_object_store(settings: ObjectStoreSettings, *uris: str) -> None:
    """Refuse, naming the parameter, what would otherwise fail deep inside LanceDB or pyarrow."""
    remote = [uri for uri in uris if "://" in uri]
    for uri in remote:
        if not is_object_store_uri(uri):
            raise ValueError(f"{uri!r}: cropsearch stores on local folders and s3:// URIs only")
        if not uri.removeprefix("s3://").split("/")[0]:
            raise ValueError(f"{uri!r} names no bucket: give s3://<bucket>/<prefix>")
    if remote:
        settings.check_endpoint()


def resolve_embedder(store: Database, name: str, option: str = "--embedder") -> tuple[str, str]:
    """The (id, spec) of the embedder of the index that `name` names: its id as `cropsearch models` lists it,
    the path or hub id it was loaded from, or weights with its id; an error naming `option` otherwise."""
    specs = store.embedder_specs()
    if name in specs:
        return name, specs[name]
    for embedder_id, spec in specs.items():
        if spec in (name, portable_spec(name)):
            return embedder_id, spec
    embedder_id = model_id(name)
    store.check_embedder(embedder_id, option)
    return embedder_id, portable_spec(name)


def check_query_can_start(params: QueryParams, text_query: bool = True) -> tuple[str, str, Ranking]:
    """Validate the embedder and the mode against the index.

    Returns the embedder's spec and id (by default the index's default embedder) and the ranking the
    query gets (`auto` resolved).
    """
    check_db_exists(params.resolved_db_uri)
    check_object_store(params.object_store, params.resolved_db_uri)
    store = Database(params.resolved_db_uri, params.object_store)
    default = store.default_embedder()
    if default is None:
        search_mode(params.search, text_query, store)  # a mode that cannot be is named before the missing index
        raise StoreMismatchError(f"no index at {params.resolved_db_uri}: run `cropsearch index` first")
    if params.embedder is not None:
        embedder_id, spec = resolve_embedder(store, params.embedder)
    else:
        embedder_id, spec = default, store.embedder_spec(default)
    ranking = search_mode(params.search, text_query, store, embedder_id)
    if ranking != "text":  # words alone need no model
        check_embedder_available(spec)
    if params.search.classes:
        check_classes_known(params.search.classes, store.class_names())
    return spec, embedder_id, ranking


def check_classes_known(classes: Sequence[str], known: set[str]) -> None:
    """A class the index has no crop of is a typo, not an empty answer: name it, and the classes there are."""
    unknown = [name for name in classes if name not in known]
    if unknown:
        shown = ", ".join(sorted(known)) or "none (no crops yet)"
        raise ValueError(f"classes: {', '.join(map(repr, unknown))} not in the index; it has: {shown}")
