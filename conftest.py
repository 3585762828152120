"""Root pytest configuration: the shared fixtures of the real components.

Each harness lives in its own plugin module so that unit tests import nothing
heavy and integration, e2e and benchmark code share one way of starting things.
"""

pytest_plugins = [
    "tests.harness.postgres_fixtures",
    "tests.harness.cluster_fixtures",
    "tests.harness.operator_fixtures",
    "tests.harness.cleanup_fixtures",
    "tests.harness.trace_collector",
]
