"""The eight stages of an initialization, one op each (one module each), in the order they run."""

STAGES = (
    "validate",
    "approve",
    "provision",
    "create",
    "core_schema",
    "package_schemas",
    "verify",
    "log",
)
