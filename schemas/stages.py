"""The stages of an index run, as the flow announces them in its log.

Every stage the flow's own thread passes through is announced when it starts and when it
finishes: one log line each, in the form `stage_marker` writes and `STAGE_MARKER` reads. Nothing
but the crash loop (`bench/crash_loop.py`) depends on them: it aims its kills at stages by these
lines and reads from them where each kill landed, so a stage renamed or left unannounced shows up
as a gap in its coverage instead of passing unnoticed.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

# In the order a run passes through them. `download` and `unzip` happen inside `acquire`, and only
# for a zip source (a URL is downloaded first). `model work` is the flow waiting for a chunk's
# detection, crops and vectors (crop files are written then, on threads of the worker); during a
# chunk's `write` the next chunk's model work goes on beside it.
IndexStage = Literal[
    "acquire", "download", "unzip", "register", "plan", "model work", "write", "compact", "index build"
]
INDEX_STAGES: tuple[IndexStage, ...] = get_args(IndexStage)
STAGE_MARKER = re.compile(r"stage '(?P<stage>[a-z ]+)' (?P<event>started|finished)")


def stage_marker(stage: IndexStage, event: Literal["started", "finished"]) -> str:
    return f"stage '{stage}' {event}"
