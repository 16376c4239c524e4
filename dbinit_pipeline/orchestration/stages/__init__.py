"""The eight stages, one op per module, in the order they run: validate, approve, provision, create,
core_schema, package_schemas, verify, log (their work: the plain functions in pipeline/)."""
