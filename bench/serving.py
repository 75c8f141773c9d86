"""Part of step 3 of `make bench`: `cropsearch serve` over the largest synthetic index, timed over HTTP.

The server is the real command in its own process; this process is its client, as a browser or
`cropsearch query --server` would be. Latencies are whole requests: HTTP, encoding, search, join
and the JSON answer.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.plan import Figures, Plan
from bench.report import Row, percentiles

SERVE_TARGETS = {"text_p50_ms": 45.0, "text_p95_ms": 60.0, "image_p95_ms": 120.0, "similar_p95_ms": 40.0}
PICTURE_P95_MS = 10.0
CLIENTS = 8
_TEXTS = ("a potted plant behind a sofa", "a red bus on a city street", "a cat sleeping on a laptop")


def start_server(db_dir: Path, embedder: str, device: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """`cropsearch serve` on a free port; returns once it prints its address (models loaded and warmed)."""
    command = [sys.executable, "-m", "flows.cli", "serve", "--db", str(db_dir), "--embedder", embedder]
    command += ["--port", "0", "--device", device]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("serving "):
            return server, line.split(" at ")[1].split("/ ")[0]
    server.wait()
    raise RuntimeError(f"cropsearch serve exited with {server.returncode}: {log.read_text()[-2000:]}")


def _timed(call: Any, count: int) -> list[float]:
    seconds = []
    for number in range(count):
        started = time.perf_counter()
        response = call(number)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:300]
    return seconds


def measure_serving(db_dir: Path, embedder: str, plan: Plan, photo: Path, record_ids: list[str]) -> dict[str, Any]:
    """Sequential latencies per kind of request, then 8 clients at once for a while."""
    import httpx

    server, url = start_server(db_dir, embedder, plan.device, plan.work / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
            # The first request of each kind pays one-off costs (a table opened, a picture decoded): not timed.
            for warm in range(3):
                client.get("/api/search", params={"text": _TEXTS[warm]}).raise_for_status()
            text = _timed(lambda n: client.get("/api/search", params={"text": _TEXTS[n % 3], "k": 10}), plan.queries)
            upload = photo.read_bytes()

            def by_image(_: int) -> Any:
                return client.post("/api/search", data={"k": "10"}, files={"image": ("q.jpg", io.BytesIO(upload))})

            by_image(0)
            image = _timed(by_image, max(10, plan.queries // 2))
            similar = _timed(
                lambda n: client.get(f"/api/similar/{record_ids[n % len(record_ids)]}", params={"k": 10}),
                plan.queries,
            )
            hit_ids = [
                hit["image"]["image_id"] for hit in client.get("/api/search", params={"text": "x"}).json()["hits"]
            ]
            for image_id in hit_ids:  # made once per id and size, then served from memory
                client.get(f"/api/images/{image_id}", params={"size": 256}).raise_for_status()
            pictures = _timed(
                lambda n: client.get(f"/api/images/{hit_ids[n % len(hit_ids)]}", params={"size": 256}), plan.queries
            )
        under_load = _concurrent_text_queries(url, seconds=5.0 if plan.quick else 30.0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "text_ms": percentiles(text),
        "image_ms": percentiles(image),
        "similar_ms": percentiles(similar),
        "picture_cached_ms": percentiles(pictures),
        "concurrent": under_load,
    }


def _concurrent_text_queries(url: str, seconds: float) -> dict[str, Any]:
    """CLIENTS threads, each with its own connection, asking text queries back to back for `seconds`."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop(number: int) -> None:
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = client.get("/api/search", params={"text": _TEXTS[number % 3], "k": 10})
                    failed = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
                    failed = repr(error)
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if failed:
                        errors.append(failed)

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "clients": CLIENTS,
        "planned_seconds": seconds,
        "seconds": elapsed,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "per_second": len(latencies) / elapsed,
        "latency_ms": percentiles(latencies),
    }


def serving_rows(figures: Figures) -> list[Row]:
    served = figures.queries.get("serving")
    if not served:
        return []
    rows_count = f"{int(served['rows']):,}"
    text, image = served["text_ms"], served["image_ms"]
    similar, picture = served["similar_ms"], served["picture_cached_ms"]
    load = served["concurrent"]
    text_met = text["p50"] <= SERVE_TARGETS["text_p50_ms"] and text["p95"] <= SERVE_TARGETS["text_p95_ms"]
    targets = SERVE_TARGETS
    return [
        Row(
            f"serve: text query over HTTP p50/p95 at {rows_count} rows (ANN)",
            f"{text['p50']:.1f} / {text['p95']:.1f} ms",
            f"<= {targets['text_p50_ms']:.0f} / {targets['text_p95_ms']:.0f} ms",
            text_met,
        ),
        Row(
            "serve: image query (a 640x480 upload) p50/p95",
            f"{image['p50']:.1f} / {image['p95']:.1f} ms",
            f"p95 <= {targets['image_p95_ms']:.0f} ms",
            image["p95"] <= targets["image_p95_ms"],
        ),
        Row(
            "serve: more like this (stored vector) p50/p95",
            f"{similar['p50']:.1f} / {similar['p95']:.1f} ms",
            f"p95 <= {targets['similar_p95_ms']:.0f} ms",
            similar["p95"] <= targets["similar_p95_ms"],
        ),
        Row(
            "serve: a picture once cached (256 px JPEG) p50/p95",
            f"{picture['p50']:.1f} / {picture['p95']:.1f} ms",
            f"p95 <= {PICTURE_P95_MS:.0f} ms",
            picture["p95"] <= PICTURE_P95_MS,
        ),
        Row(
            f"serve: {load['clients']} clients at once for {load['planned_seconds']:.0f} s (text queries)",
            f"{load['per_second']:.1f} queries/s, p95 {load['latency_ms']['p95']:.0f} ms, {load['errors']} errors",
            "0 errors",
            load["errors"] == 0,
        ),
    ]
