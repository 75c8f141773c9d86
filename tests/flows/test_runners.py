"""Prefect settings the flows run under: heartbeats only where a server can read them."""

from __future__ import annotations

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
