"""Safety below the Dagster layer: what a run is pinned to, and which databases are protected."""
