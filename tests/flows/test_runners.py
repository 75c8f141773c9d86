"""Prefect settings the flows run under: heartbeats only where a server can read them."""

from __future__ import annotations

from pathlib import Path

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.runners import no_heartbeats_without_a_server


def test_runs_on_a_temporary_api_send_no_heartbeats() -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with no_heartbeats_without_a_server():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency is not None


def test_runs_reporting_to_a_server_keep_their_heartbeats() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        before = get_current_settings().flows.heartbeat_frequency
        with no_heartbeats_without_a_server():
            assert get_current_settings().flows.heartbeat_frequency == before is not None


def test_a_server_that_does_not_answer_gives_way_to_a_temporary_one_with_one_line() -> None:
    """Issue 42, item 1: a profile naming a stopped server made every command print a 124-line traceback."""
    import socket

    from flows.runners import an_api_that_answers

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    notices: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: gone}), an_api_that_answers(notices.append):
        assert PREFECT_API_URL.value() is None  # runs start a temporary API, as with no server at all
    assert notices == [
        f"the Prefect server at {gone} does not answer (stopped?): this run uses a temporary local one; "
        "`cropsearch stack up` starts the server again"
    ]
    with temporary_settings(updates={PREFECT_API_URL: None}), an_api_that_answers(notices.append):
        assert PREFECT_API_URL.value() is None and len(notices) == 1  # no server named: nothing to say


def test_a_query_run_links_to_the_search_page_only_over_the_database_it_serves(tmp_path: Path) -> None:
    """Issue 42, item 2: the link opened the page over its own database, whatever database the run searched."""
    from flows.query import search_page_link
    from schemas.params import QueryParams

    page, served = "http://127.0.0.1:8800", tmp_path / "data" / "lancedb"
    same = search_page_link(page, str(served), "a cat", QueryParams(data_dir=tmp_path / "data", k=4))
    assert same == "[Open this search on the search page](http://127.0.0.1:8800/?text=a+cat&k=4)\n\n"
    other = search_page_link(page, str(served), "a cat", QueryParams(db_uri=str(tmp_path / "other"), k=4))
    assert other == f"The search page ({page}) serves {served}; this run searched {tmp_path / 'other'}.\n\n"
