"""Time the verify stage's work on an initialized database, in-process (no job around it).

    python -m bench.verify_probe --config DIR/dbinit.yaml --database NAME

Prints one JSON object: seconds for reading the registry and for `verify_database`, the
verify status, and how many tables it compared. The server URL comes from $BENCH_PG_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from dbinit_pipeline.configuration import load_config
    from dbinit_pipeline.database.server import DatabaseServer, ServerRef, display_url, parse_url
    from dbinit_pipeline.migrations.loading import registry_for
    from dbinit_pipeline.verify.health import verify_database

    config = load_config(args.config.resolve())
    started = time.perf_counter()
    packages = registry_for(config).ordered()
    registry_s = time.perf_counter() - started
    url = parse_url(os.environ["BENCH_PG_URL"], source="BENCH_PG_URL")
    server = DatabaseServer(ServerRef("postgresql", display_url(url), "env:BENCH_PG_URL", "postgres"))
    timings: list[float] = []
    outcome = None
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        outcome = verify_database(server, args.database, packages, config.model.health)
        timings.append(time.perf_counter() - started)
    assert outcome is not None
    print(
        json.dumps(
            {
                "registry_s": round(registry_s, 4),
                "verify_s": round(min(timings), 4),
                "verify_runs_s": [round(t, 4) for t in timings],
                "status": outcome.status,
                "schema_status": outcome.schema.get("status"),
                "tables_expected": outcome.schema.get("tables_expected"),
            }
        )
    )


if __name__ == "__main__":
    main()
