"""The warm host: one long-lived process per user, code and environment that runs CLI commands.

A `cropsearch` process is a thin client: it hands its arguments and its terminal (stdin, stdout,
stderr, by file-descriptor passing) to the host over a user-only Unix socket, and exits with the
command's status. The host keeps the libraries imported, the models loaded and one Prefect API
running, so a re-run or a query costs what its work costs. Plain Python: what a command does is
the caller's `run_command`.
"""
