"""Settings: defaults, overridden by ARCEXT_* environment variables and by create_app(config)."""

from __future__ import annotations

DEFAULTS: dict[str, object] = {
    "ARCEXT_DATA_DIR": "./.arcext",
    "ARCEXT_DATABASE_URL": "",  # postgresql://... : the PostgreSQL store instead of the embedded one
    "ARCEXT_MANUAL_CLOCK": False,
    "ARCEXT_RETRY_AFTER": 1,  # seconds, sent on every 202
    "ARCEXT_PAGE_SIZE": 100,  # items per list page before a nextLink
    "ARCEXT_MAX_BODY": 1024 * 1024,  # bytes; larger bodies get 413
    "ARCEXT_PUBLIC_URL": "",  # base of absolute URLs in responses; "" = the address the server listens on
    "ARCEXT_SEED_CATALOG": True,
    "ARCEXT_SIMULATE": False,  # machines without host-connection settings are simulated hosts
    "ARCEXT_UPGRADE_CONCURRENCY": 16,  # upgrade jobs running at once
    "ARCEXT_RETRY_DELAY": 3600,  # seconds before the next attempt after a failed upgrade
    "ARCEXT_STANDARD_WINDOW": 8 * 7 * 86400,  # seconds for a standard version to reach the fleet
    "ARCEXT_CRITICAL_WINDOW": 3 * 7 * 86400,  # seconds for a critical version
    "ARCEXT_BATCH_PERCENT": 20,  # batch size, % of a subscription's eligible machines in a phase
    "ARCEXT_BREAKER_PERCENT": 20,  # a batch failing more than this % freezes the version's rollout
    "ARCEXT_BREAKER_MIN_FAILURES": 2,  # ... once at least this many machines of the batch failed
    "ARCEXT_HOST_TIMEOUT": 600,  # seconds a host operation may take before it counts as hung
    "ARCEXT_SIM_LATENCY_MS": 0,  # added to every simulated host operation
    "ARCEXT_ENGINE_TICK": 1.0,  # seconds between scheduler passes
    #: seconds a background loop (the scheduler, a cluster node's) may stay silent before it counts as stalled: health
    #: answers 503 and the worker leaves, to be replaced (arcext.heartbeat); 0: never
    "ARCEXT_WATCHDOG_SECONDS": 120.0,
    "ARCEXT_LEADER_POLL": 1.0,  # with a database: seconds between a follower's tries to become the engine's leader
    "ARCEXT_JOB_LEASE": 30.0,  # with a database: seconds a node's claim on a job lasts without renewal
    "ARCEXT_OPERATION_SWEEP": 5.0,  # with a database: seconds between looks for operations of nodes gone
    "ARCEXT_LEADER_WAIT": 5.0,  # with a database: seconds a forwarded engine call waits for a leader (then 503)
    "ARCEXT_WEBHOOK_RETRY_BASE": 5.0,  # seconds before a failed webhook delivery's first retry (doubles)
    "ARCEXT_WEBHOOK_RETRY_MAX": 3600.0,  # the longest wait between two delivery attempts
    "ARCEXT_WEBHOOK_MAX_AGE": 86400.0,  # a delivery not made within this many seconds expires
    "ARCEXT_WEBHOOK_TIMEOUT": 10.0,  # seconds per delivery attempt
}


def coerce(name: str, value: str) -> object:
    """Environment values arrive as strings; give them the default's type."""
    default = DEFAULTS.get(name)
    if isinstance(default, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value
