"""Downloads from a real local HTTP server, safe unzip, listing and hashing."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from components.errors import SourceError, UnsafeArchiveError
from components.pipeline import sources
from tests.http_server import LocalHttpServer


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_download_writes_the_file_and_verifies_its_checksum(http_server: LocalHttpServer, tmp_path: Path) -> None:
    http_server.files["/data.bin"] = PAYLOAD
    checksum = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    record = sources.download(http_server.url("/data.bin"), tmp_path / "data.bin", checksum)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert record.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert record.num_bytes == len(PAYLOAD)
    assert not (tmp_path / "data.bin.part").exists()


def test_interrupted_download_resumes_with_a_range_request(http_server: LocalHttpServer, tmp_path: Path) -> None:
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drop_after["/data.bin"] = 300_000
    destination = tmp_path / "data.bin"
    with pytest.raises(SourceError, match=r"interrupted .* run again to resume"):
        sources.download(http_server.url("/data.bin"), destination)
    assert not destination.exists()
    kept = (tmp_path / "data.bin.part").stat().st_size
    assert 0 < kept <= 300_000

    record = sources.download(
        http_server.url("/data.bin"), destination, "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    )
    second = [r for r in http_server.requests if r["method"] == "GET"][1]
    assert second.get("Range") == f"bytes={kept}-"
    assert destination.read_bytes() == PAYLOAD
    assert record.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_server_that_ignores_range_gets_a_fresh_start_not_an_append(
    http_server: LocalHttpServer, tmp_path: Path
) -> None:
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drop_after["/data.bin"] = 300_000
    destination = tmp_path / "data.bin"
    with pytest.raises(SourceError, match="interrupted"):
        sources.download(http_server.url("/data.bin"), destination)
    http_server.ignore_range.add("/data.bin")  # asked to resume, it sends the whole file again
    sources.download(http_server.url("/data.bin"), destination, "sha256:" + hashlib.sha256(PAYLOAD).hexdigest())
    assert destination.read_bytes() == PAYLOAD


def test_a_finished_download_is_checked_again_when_reused(http_server: LocalHttpServer, tmp_path: Path) -> None:
    """A run that names a checksum is never handed an earlier download that does not match it."""
    http_server.files["/data.bin"] = PAYLOAD
    destination = tmp_path / "data.bin"
    sources.download(http_server.url("/data.bin"), destination)
    with pytest.raises(SourceError, match=r"checksum mismatch .*: expected md5 0+, got "):
        sources.download(http_server.url("/data.bin"), destination, "md5:" + "0" * 32)
    assert not destination.exists()  # ours, and wrong for this run: removed, so the next run fetches it again


def test_wrong_checksum_fails_clearly_and_removes_the_file(http_server: LocalHttpServer, tmp_path: Path) -> None:
    http_server.files["/data.bin"] = PAYLOAD
    with pytest.raises(SourceError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/data\.bin: expected md5 0+"):
        sources.download(http_server.url("/data.bin"), tmp_path / "data.bin", "md5:" + "0" * 32)
    assert not (tmp_path / "data.bin").exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_an_existing_file_cropsearch_did_not_download_is_neither_used_nor_deleted(
    http_server: LocalHttpServer, tmp_path: Path
) -> None:
    """Issue 25, item 4: a wrong checksum once deleted any file at the download path and printed its MD5."""
    http_server.files["/x.txt"] = b"the server's bytes"
    someone_elses = tmp_path / "x.txt"
    someone_elses.write_bytes(b"a private file")
    with pytest.raises(SourceError, match="is not the file cropsearch downloaded") as refused:
        sources.download(http_server.url("/x.txt"), someone_elses, "md5:" + "0" * 32)
    assert someone_elses.read_bytes() == b"a private file"
    assert hashlib.md5(b"a private file").hexdigest() not in str(refused.value)
    assert http_server.requests == []


def test_a_finished_download_is_reused_only_for_its_own_url_and_while_unchanged(
    http_server: LocalHttpServer, tmp_path: Path
) -> None:
    http_server.files["/a/photos.zip"] = PAYLOAD
    destination = tmp_path / "photos.zip"
    sources.download(http_server.url("/a/photos.zip"), destination)
    sources.download(http_server.url("/a/photos.zip"), destination)
    assert len(http_server.requests) == 1  # the second call found its own download
    with pytest.raises(SourceError, match="is not the file cropsearch downloaded from"):
        sources.download(http_server.url("/b/photos.zip"), destination)
    destination.write_bytes(b"edited since")
    with pytest.raises(SourceError, match="or it changed since"):
        sources.download(http_server.url("/a/photos.zip"), destination)
    assert destination.read_bytes() == b"edited since"


def test_downloads_of_two_urls_with_one_file_name_go_to_two_places(tmp_path: Path) -> None:
    """Issue 25, item 5: `.../a/photos.zip` and `.../b/photos.zip` once shared one file."""
    from components.ops.preflight import download_path

    a = download_path("http://example.org/a/photos.zip", tmp_path)
    b = download_path("http://example.org/b/photos.zip", tmp_path)
    assert a != b and a.name == b.name == "photos.zip"
    assert a == download_path("http://example.org/a/photos.zip", tmp_path)


def test_every_hop_of_a_redirect_is_vetted_before_it_is_asked(http_server: LocalHttpServer, tmp_path: Path) -> None:
    http_server.files["/real.bin"] = PAYLOAD
    http_server.redirects["/start.bin"] = http_server.url("/real.bin")
    asked: list[str] = []
    sources.download(http_server.url("/start.bin"), tmp_path / "a.bin", check_url=asked.append)
    assert asked == [http_server.url("/start.bin"), http_server.url("/real.bin")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD

    http_server.redirects["/to-metadata.bin"] = "http://169.254.169.254/latest/meta-data"

    def only_this_server(url: str) -> None:
        if not url.startswith(http_server.url("/")):
            raise SourceError(f"refused {url}")

    with pytest.raises(SourceError, match=r"refused http://169\.254\.169\.254"):
        sources.download(http_server.url("/to-metadata.bin"), tmp_path / "b.bin", check_url=only_this_server)


def test_missing_url_fails_naming_the_status(http_server: LocalHttpServer, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="HTTP 404"):
        sources.download(http_server.url("/nope.zip"), tmp_path / "nope.zip")
    with pytest.raises(SourceError, match="HTTP 404"):
        sources.check_url_reachable(http_server.url("/nope.zip"))


def test_unreachable_host_fails_fast() -> None:
    with pytest.raises(SourceError, match=r"cannot reach http://127\.0\.0\.1:9/x\.zip"):
        sources.check_url_reachable("http://127.0.0.1:9/x.zip", timeout_seconds=2)


def test_extract_zip_unpacks_everything(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    big = bytes(range(256)) * 512  # 128 KiB stored as is: big enough for its own ratio check, ratio 1
    archive.write_bytes(make_zip({"imgs/a.jpg": b"a", "imgs/sub/b.png": b"bb", "c": b"c", "big.tif": big}))
    folder = sources.extract_zip(archive, tmp_path / "out")
    assert folder.num_files == 4 and folder.num_bytes == 4 + len(big)
    assert (tmp_path / "out/imgs/sub/b.png").read_bytes() == b"bb"
    assert sources.describe_folder(tmp_path / "out") == folder


@pytest.mark.parametrize(
    "evil_name",
    [
        *("../evil.jpg", "imgs/../../evil.jpg", "/abs/evil.jpg", "C:/evil.jpg", "C:evil.jpg"),
        *("..\\evil.jpg", "imgs\\..\\..\\evil.jpg", "\\abs\\evil.jpg"),  # as a zip made on Windows names them
    ],
)
def test_zip_entries_outside_the_target_are_refused(tmp_path: Path, evil_name: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"ok.jpg": b"fine", evil_name: b"evil"}))
    with pytest.raises(UnsafeArchiveError, match=r"refusing entry .*: a path outside the target folder"):
        sources.extract_zip(archive, tmp_path / "sub" / "out")
    assert not (tmp_path / "evil.jpg").exists()
    assert not (tmp_path / "sub" / "out").exists()
    assert list(tmp_path.glob("sub/.out.partial-*")) == []


def test_zip_symlink_entries_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, "/etc/passwd")
    archive = tmp_path / "link.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match=r"refusing entry 'link.jpg': a symlink$"):
        sources.extract_zip(archive, tmp_path / "out")


def test_many_small_entries_that_inflate_past_the_ratio_are_refused_before_writing(tmp_path: Path) -> None:
    """Issue 25, item 6: 300 entries of 1 MiB of zeros (a 330 KB zip) unzipped to 301 MB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for number in range(300):
            zipped.writestr(f"zeros-{number:03d}.jpg", bytes(1024**2))
    archive = tmp_path / "many.zip"
    archive.write_bytes(buffer.getvalue())
    assert archive.stat().st_size < 400_000
    with pytest.raises(SourceError, match=r"entry 'zeros-000.jpg' inflates \d+x"):
        sources.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.partial-*")) == []


def test_entries_each_too_small_to_check_are_refused_by_the_whole_archives_ratio(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for number in range(2000):
            zipped.writestr(f"zeros-{number:04d}.jpg", bytes(48 * 1024))  # under the per-entry check's floor
    archive = tmp_path / "many.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(SourceError, match=r"inflates \d+x as a whole \(98,304,000 bytes from 2,000 entries\)"):
        sources.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_archive_with_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_ENTRIES", 10)
    archive = tmp_path / "many.zip"
    archive.write_bytes(make_zip({f"{number}.jpg": b"x" for number in range(11)}))
    with pytest.raises(SourceError, match="holds 11 entries, over the limit of 10"):
        sources.extract_zip(archive, tmp_path / "out")


def test_corrupt_zip_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    data = bytearray(make_zip({"a.jpg": b"x" * 5000}))
    data[40:60] = b"\0" * 20  # damage the first entry's data
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"bad\.zip is not a readable zip archive"):
        sources.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_zip_is_not_a_source(tmp_path: Path) -> None:
    archive = tmp_path / "cut.zip"
    archive.write_bytes(make_zip({"a.jpg": b"x" * 5000})[:100])
    with pytest.raises(SourceError, match="not a zip archive"):
        sources.classify_source(str(archive))


def test_classify_source(tmp_path: Path) -> None:
    assert sources.classify_source("http://example.com/a.zip") == "url"
    assert sources.classify_source("https://example.com/a.zip") == "url"
    assert sources.classify_source(str(tmp_path)) == "folder"
    archive = tmp_path / "photos.zip"
    archive.write_bytes(make_zip({"a.jpg": b"x"}))
    assert sources.classify_source(str(archive)) == "zip"
    with pytest.raises(SourceError, match="does not exist"):
        sources.classify_source(str(tmp_path / "missing"))


def test_list_images_keeps_images_in_a_stable_order_and_applies_the_limit(tmp_path: Path) -> None:
    for name in ["b.JPG", "a.png", "sub/c.webp", "d.txt", ".hidden.jpg", "__MACOSX/x.jpg", "e.tif", "f.bmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listed = sources.list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listed.images] == [
        "a.png",
        "b.JPG",
        "e.tif",
        "f.bmp",
        "sub/c.webp",
    ]
    assert listed.ignored == {".txt": 1}  # hidden files and __MACOSX are left out without a count
    assert [p.name for p in sources.list_images(tmp_path, limit=2).images] == ["a.png", "b.JPG"]


def test_every_photo_suffix_of_cameras_and_phones_is_listed_in_any_case_and_the_rest_counted(tmp_path: Path) -> None:
    photos = ["a.HEIC", "b.heif", "c.gif", "d.tiff", "e.avif", "f.jfif", "g.JPEG", "h.Png", "i.WEBP", "j.mpo"]
    others = ["notes.txt", "meta.json", "more.json", "clip.MOV", "raw.cr2", "README"]
    for name in photos + others:
        (tmp_path / name).write_bytes(b"x")
    listed = sources.list_images(tmp_path)
    assert sorted(p.name for p in listed.images) == sorted(photos)
    assert listed.ignored == {".txt": 1, ".json": 2, ".mov": 1, ".cr2": 1, "": 1}


def test_a_folder_thousands_of_levels_deep_is_listed_and_linked_folders_are_not_entered(tmp_path: Path) -> None:
    chain = [tmp_path / "source"]
    for _ in range(1500):  # past Python's recursion limit: a recursive walk fails here
        chain.append(chain[-1] / "d")
    for folder in chain:
        folder.mkdir()
    try:
        (chain[-1] / "bottom.jpg").write_bytes(b"x")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "outside.jpg").write_bytes(b"x")
        (chain[0] / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        assert [p.name for p in sources.list_images(chain[0]).images] == ["bottom.jpg"]
        # What a cached unzip is checked by walks it too (a zip may hold such a folder).
        assert sources.describe_folder(chain[0]).num_files == 1
    finally:  # deepest first: pytest's own clean-up of old temporary folders recurses, and would fail on it
        (chain[-1] / "bottom.jpg").unlink(missing_ok=True)
        for folder in reversed(chain[1:]):
            folder.rmdir()


def test_without_links_that_leave_links_to_files_outside_the_folder_are_set_aside(tmp_path: Path) -> None:
    """Deployed runs: a link inside a source must not read a file elsewhere on the worker (issue 25, item 3)."""
    source, elsewhere = tmp_path / "source", tmp_path / "elsewhere"
    source.mkdir()
    elsewhere.mkdir()
    (elsewhere / "private.jpg").write_bytes(b"x")
    (source / "own.jpg").write_bytes(b"x")
    (source / "innocent.jpg").symlink_to(elsewhere / "private.jpg")
    (source / "alias.jpg").symlink_to(source / "own.jpg")  # a link that stays inside is fine
    held = sources.list_images(source, links_may_leave=False)
    assert [p.name for p in held.images] == ["alias.jpg", "own.jpg"]
    assert [p.name for p in held.links_out] == ["innocent.jpg"]
    assert len(sources.list_images(source).images) == 3  # the CLI's user follows their own links


def test_is_unchanged_notices_a_vanished_or_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    record = sources.describe_file(path)
    assert sources.is_unchanged(record)
    path.write_bytes(b"abd")
    assert not sources.is_unchanged(record)
    path.write_bytes(b"abcd")  # another size: changed, even with the recorded modification time put back
    os.utime(path, ns=(record.mtime_ns, record.mtime_ns))
    assert not sources.is_unchanged(record)
    path.unlink()
    assert not sources.is_unchanged(record)


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("ok.jpg", b"fine")
        zipped.writestr("zeros.jpg", bytes(64 * 1024**2))  # 64 MiB of zeros deflate ~1000x
    assert archive.stat().st_size < 1024**2
    with pytest.raises(SourceError, match=r"'zeros.jpg' inflates \d+x .*a zip bomb"):
        sources.extract_zip(archive, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]  # no staging folder, no partial files


def test_an_archive_over_the_size_limit_or_the_free_space_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    archive.write_bytes(make_zip({"a.jpg": bytes(4096), "b.jpg": bytes(4096)}))
    with pytest.raises(SourceError, match=r"would unzip to 8,192 bytes, over the limit of 4,096"):
        sources.extract_zip(archive, tmp_path / "out", max_bytes=4096)
    assert not (tmp_path / "out").exists()


def test_an_archive_that_would_not_fit_in_the_free_space_is_refused_before_writing(
    tmp_path: Path, small_disk: Path
) -> None:
    """Issue 26, item 1: the size limit alone was tested. 256 KiB of entries on a 64 KiB tmpfs, far under the limit."""
    archive = tmp_path / "roomy.zip"
    archive.write_bytes(make_zip({f"{n}.jpg": bytes(64 * 1024) for n in range(4)}))
    with pytest.raises(SourceError, match=r"needs 262,144 bytes to unzip; .*small has [0-9,]+ free"):
        sources.extract_zip(archive, small_disk / "out")
    assert list(small_disk.iterdir()) == []  # nothing written, no partial folder left
