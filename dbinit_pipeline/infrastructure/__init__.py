"""Cloud infrastructure: AWS RDS and Aurora, Google Cloud SQL, Azure Database flexible servers.

Importing this package registers the readers of the cloud secret sources with the database layer.
"""

from __future__ import annotations

from collections.abc import Callable

from dbinit_pipeline.database.secrets import register_reader
from dbinit_pipeline.infrastructure.cloud import resolve_cloud_secret


def _aws_secret(where: str) -> tuple[str, str]:
    # boto3 costs a noticeable part of a second at import; only AWS secret sources need it.
    from dbinit_pipeline.infrastructure.aws import resolve_secret_source

    return resolve_secret_source(where)


def _cloud_secret(kind: str) -> Callable[[str], tuple[str, str]]:
    def read(where: str) -> tuple[str, str]:
        return resolve_cloud_secret(kind, where)

    return read


register_reader("aws-secret", _aws_secret)
register_reader("gcp-secret", _cloud_secret("gcp-secret"))
register_reader("azure-secret", _cloud_secret("azure-secret"))
