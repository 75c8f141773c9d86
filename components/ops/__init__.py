"""Running cropsearch for others: the local Prefect stack, checks before a run, and the trust policy.

`stack.py` (server, work pool, deployments, worker), `preflight.py` (fail in seconds naming the
culprit), `access.py` (paths inside allowed roots), `trust.py` (deployed runs held to the
operator's policy, docs/trust-model.md). May import every other subsystem.
"""
