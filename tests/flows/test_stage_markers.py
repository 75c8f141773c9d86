"""Stage markers: a stage logs `started`, and `finished` only when it did not raise (the crash loop reads both).

`announced` (flows/index_tasks.py) is tested alone, with the run logger replaced by a plain one: the
flow tests that see the markers run a whole index (tests/flows/test_flows.py), and none of them
fails a stage.
"""

from __future__ import annotations

import logging

import pytest

from schemas.stages import STAGE_MARKER


class _Lines(logging.Handler):
    # A handler of its own: Prefect's logging setup leaves caplog's root handler out of it.
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_stage_that_raises_is_announced_started_and_never_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.index_tasks as index_tasks

    logger, handler = logging.getLogger("tests.flows.stage_markers"), _Lines()
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(index_tasks, "get_run_logger", lambda: logger)
    with pytest.raises(OSError, match="disk full"), index_tasks.announced("write"):
        raise OSError("disk full")
    with index_tasks.announced("compact"):
        pass
    with pytest.raises(KeyboardInterrupt), index_tasks.announced("index build"):
        raise KeyboardInterrupt  # a cancelled run: that stage did not finish either
    markers = [(found["stage"], found["event"]) for line in handler.lines if (found := STAGE_MARKER.search(line))]
    assert markers == [
        ("write", "started"),
        ("compact", "started"),
        ("compact", "finished"),
        ("index build", "started"),
    ]
