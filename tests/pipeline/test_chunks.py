"""Chunks in flight: a few submitted ahead, taken back in submission order, each with the time its wait took."""

from __future__ import annotations

from components.pipeline.chunks import in_order


def test_chunks_come_back_in_order_with_at_most_ahead_in_flight() -> None:
    in_flight: list[int] = []
    most = 0

    def submit(chunk: list[int]) -> int:
        nonlocal most
        in_flight.append(chunk[0])
        most = max(most, len(in_flight))
        return chunk[0]

    def wait(first: int) -> str:
        in_flight.remove(first)
        return f"done {first}"

    chunks = iter([[0, 1], [2, 3], [4, 5], [6]])
    taken = list(in_order(chunks, submit, ahead=2, wait=wait))
    assert [(chunk, done) for chunk, done, _ in taken] == [
        ([0, 1], "done 0"),
        ([2, 3], "done 2"),
        ([4, 5], "done 4"),
        ([6], "done 6"),
    ]
    assert most == 2 and in_flight == [] and all(seconds >= 0 for _, _, seconds in taken)
