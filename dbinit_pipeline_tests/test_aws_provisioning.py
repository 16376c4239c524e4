"""AWS hosting (aws-rds, aws-aurora) against moto's server on loopback: real HTTP, real boto3.

Moto plays AWS: boto3 reaches it through `endpoint_url`, nothing is patched in process. Where
moto cannot produce an error AWS does produce (throttling, quotas), a small HTTP server on
loopback answers in RDS's own wire format, so botocore parses a real response. The end-to-end
runs provision on moto and then create the database and apply the schemas on a real PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.errors import DbinitError, ProvisioningError
from dbinit_pipeline.infrastructure.aws import (
    ENVIRONMENT_TAG,
    Deadline,
    aws_disk_space,
    aws_target,
    ensure_aws_infrastructure,
    find_instance,
    rds_client,
    wait_until_available,
)
from dbinit_pipeline.infrastructure.provisioner import provision
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.pipeline.validate import InitParams, build_plan
from dbinit_pipeline.redaction import redact
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project

REGION = "us-east-1"
FAST = {"poll_interval": 0.01, "wait_timeout": 5}


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server on an ephemeral loopback port, shared by this module's tests."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials moto accepts; no profile or config file of the machine is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_RDS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def rds(moto_url: str) -> Any:
    """A plain boto3 RDS client on moto, for the tests' own reads and setup."""
    return boto3.client("rds", endpoint_url=moto_url, region_name=REGION)


@pytest.fixture
def secrets(moto_url: str) -> Any:
    return boto3.client("secretsmanager", endpoint_url=moto_url, region_name=REGION)


def unique_id(prefix: str = "db") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write_config(
    folder: Path, hosting: str, aws: dict[str, Any], *, environment: str = "dev", **env: Any
) -> LoadedConfig:
    """A dbinit.yaml with one AWS-hosted environment (plus production, which is protected)."""
    doc = {
        "project": "testproj",
        "database": {"provider": "postgresql", "hosting": "local"},
        "environments": {environment: {"hosting": hosting, "aws": aws, **env}},
        "safety": {"protected_environments": ["production"]},
    }
    path = folder / "dbinit.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def aws_block(moto_url: str, identifier: str, **settings: Any) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": moto_url, "identifier": identifier, **FAST, **settings}


def tags_of(described: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in described.get("TagList", [])}


def instance_ids(rds: Any) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}


def cluster_ids(rds: Any) -> set[str]:
    return {c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]}


def master_password(secrets: Any, described: dict[str, Any]) -> str:
    raw = secrets.get_secret_value(SecretId=described["MasterUserSecret"]["SecretArn"])["SecretString"]
    password: str = json.loads(raw)["password"]
    return password


def assert_secret_free(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


def set_moto_auth(moto_url: str, count: str) -> None:
    """moto's own control API: enforce IAM from the Nth request on ("inf" switches it off)."""
    request = urllib.request.Request(
        f"{moto_url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as reply:
        reply.read()


class RdsErrorServer:
    """An HTTP server on loopback that answers RDS API calls with the errors it is told to.

    For errors moto never produces (throttling, quotas): the body is RDS's XML error format, so
    botocore parses and raises it exactly as it would from AWS. It counts requests per action.
    """

    def __init__(self, errors: dict[str, tuple[int, str, str]]) -> None:
        self.errors = errors
        self.calls: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                action = parse_qs(self.rfile.read(length).decode()).get("Action", ["?"])[0]
                owner.calls[action] = owner.calls.get(action, 0) + 1
                status, code, message = owner.errors.get(
                    action, (404, "DBInstanceNotFound", "DBInstance not found.")
                )
                body = (
                    '<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
                    f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RdsErrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- creation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["dev", "production"])
def test_rds_instance_is_created_with_the_requested_parameters(
    tmp_path: Path, moto_url: str, rds: Any, environment: str
) -> None:
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION)
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    subnet_group = unique_id("subnets")
    rds.create_db_subnet_group(
        DBSubnetGroupName=subnet_group, DBSubnetGroupDescription="test", SubnetIds=subnets
    )
    identifier = unique_id()
    settings = aws_block(
        moto_url,
        identifier,
        engine_version="16.3",
        instance_class="db.t3.small",
        allocated_storage=30,
        max_allocated_storage=100,
        master_username="owner",
        subnet_group=subnet_group,
        security_groups=["sg-0a1b2c3d"],
        tags={"team": "data", "cost-center": "42"},
    )
    config = write_config(tmp_path, "aws-rds", settings, environment=environment)

    infra = ensure_aws_infrastructure(config, environment, dry_run=False)

    assert infra.infrastructure == "provisioned"
    assert infra.created == (f"RDS instance {identifier}",)
    described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert described["Engine"] == "postgres"
    assert described["EngineVersion"] == "16.3"
    assert described["DBInstanceClass"] == "db.t3.small"
    assert described["AllocatedStorage"] == 30
    assert described["MaxAllocatedStorage"] == 100
    assert described["MasterUsername"] == "owner"
    assert described["DBSubnetGroup"]["DBSubnetGroupName"] == subnet_group
    assert [g["VpcSecurityGroupId"] for g in described["VpcSecurityGroups"]] == ["sg-0a1b2c3d"]
    assert tags_of(described) == {"team": "data", "cost-center": "42", ENVIRONMENT_TAG: environment}
    assert described["DeletionProtection"] is (environment == "production")
    assert described["MasterUserSecret"]["SecretArn"]
    # What the stage reports: the identifier and the endpoint AWS gave it.
    details = infra.details()
    assert details["identifier"] == identifier
    assert details["endpoint"] == f"{described['Endpoint']['Address']}:{described['Endpoint']['Port']}"
    assert details["status"] == "available"


def test_aurora_cluster_is_created_with_a_writer_instance(tmp_path: Path, moto_url: str, rds: Any) -> None:
    identifier = unique_id("aurora")
    settings = aws_block(moto_url, identifier, engine_version="15.4", tags={"team": "data"})
    config = write_config(tmp_path, "aws-aurora", settings, environment="production")

    infra = ensure_aws_infrastructure(config, "production", dry_run=False)

    assert infra.infrastructure == "provisioned"
    writer = f"{identifier}-writer"
    assert infra.created == (f"Aurora cluster {identifier}", f"writer instance {writer}")
    cluster = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
    assert cluster["Engine"] == "aurora-postgresql"
    assert cluster["EngineVersion"] == "15.4"
    assert cluster["MasterUsername"] == "dbinit_admin"
    assert cluster["DeletionProtection"] is True
    assert cluster["MasterUserSecret"]["SecretArn"]
    assert tags_of(cluster) == {"team": "data", ENVIRONMENT_TAG: "production"}
    assert cluster["DBClusterMembers"] == [
        {
            "DBInstanceIdentifier": writer,
            "IsClusterWriter": True,
            "DBClusterParameterGroupStatus": "in-sync",
            "PromotionTier": 1,
        }
    ]
    instance = rds.describe_db_instances(DBInstanceIdentifier=writer)["DBInstances"][0]
    assert instance["DBClusterIdentifier"] == identifier
    assert instance["DBInstanceClass"] == "db.t4g.medium"  # Aurora's smallest, not RDS's db.t3.micro
    assert tags_of(instance)[ENVIRONMENT_TAG] == "production"
    assert infra.endpoint == cluster["Endpoint"]
    assert infra.details()["writer_instance"] == writer


# --- reuse --------------------------------------------------------------------------------------


def test_existing_instance_is_reused_and_nothing_is_created(tmp_path: Path, moto_url: str, rds: Any) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.m5.large",
        AllocatedStorage=50,
        MasterUsername="someone",
        ManageMasterUserPassword=True,
    )
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, identifier, instance_class="db.t3.micro"))
    before = instance_ids(rds)

    infra = ensure_aws_infrastructure(config, "dev", dry_run=False)

    assert infra.infrastructure == "existing"
    assert infra.created == ()
    assert instance_ids(rds) == before
    described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert described["DBInstanceClass"] == "db.m5.large", "an existing instance is never modified"
    assert infra.master_username == "someone"


def test_existing_cluster_is_reused_and_a_missing_writer_is_added(
    tmp_path: Path, moto_url: str, rds: Any
) -> None:
    identifier = unique_id("aurora")
    # A cluster without instances: what an earlier run leaves when it stops between the two creates.
    rds.create_db_cluster(
        DBClusterIdentifier=identifier,
        Engine="aurora-postgresql",
        MasterUsername="dbinit_admin",
        ManageMasterUserPassword=True,
    )
    config = write_config(tmp_path, "aws-aurora", aws_block(moto_url, identifier))
    clusters = cluster_ids(rds)

    first = ensure_aws_infrastructure(config, "dev", dry_run=False)
    assert first.infrastructure == "provisioned"
    assert first.created == (f"writer instance {identifier}-writer",)
    instances = instance_ids(rds)

    second = ensure_aws_infrastructure(config, "dev", dry_run=False)
    assert second.infrastructure == "existing"
    assert second.created == ()
    assert cluster_ids(rds) == clusters
    assert instance_ids(rds) == instances


def test_infrastructure_of_another_environment_is_refused(tmp_path: Path, moto_url: str, rds: Any) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="u",
        ManageMasterUserPassword=True,
        Tags=[{"Key": ENVIRONMENT_TAG, "Value": "production"}],
    )
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, identifier), environment="staging")

    with pytest.raises(DbinitError) as caught:
        ensure_aws_infrastructure(config, "staging", dry_run=False)

    assert caught.value.code == "infrastructure_owned_elsewhere"
    assert "production" in caught.value.message
    assert "identifier" in " ".join(caught.value.suggestions)


def test_dry_run_creates_nothing(tmp_path: Path, moto_url: str, rds: Any) -> None:
    instance, cluster = unique_id(), unique_id("aurora")
    before = (instance_ids(rds), cluster_ids(rds))

    rds_plan = ensure_aws_infrastructure(
        write_config(tmp_path, "aws-rds", aws_block(moto_url, instance)), "dev", dry_run=True
    )
    aurora_plan = ensure_aws_infrastructure(
        write_config(tmp_path, "aws-aurora", aws_block(moto_url, cluster)), "dev", dry_run=True
    )

    assert rds_plan.infrastructure == "would_provision"
    assert rds_plan.details()["would_create"] == [f"RDS instance {instance}"]
    assert aurora_plan.infrastructure == "would_provision"
    assert aurora_plan.details()["would_create"] == [
        f"Aurora cluster {cluster}",
        f"writer instance {cluster}-writer",
    ]
    assert (instance_ids(rds), cluster_ids(rds)) == before


# --- waiting under a deadline -------------------------------------------------------------------


def test_deadline_fails_with_the_last_state_and_what_to_do(tmp_path: Path, moto_url: str, rds: Any) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="u",
        ManageMasterUserPassword=True,
    )
    rds.stop_db_instance(DBInstanceIdentifier=identifier)
    settings = aws_block(moto_url, identifier, wait_timeout=0.4, poll_interval=0.02)
    config = write_config(tmp_path, "aws-rds", settings)

    started = time.monotonic()
    with pytest.raises(ProvisioningError) as caught:
        ensure_aws_infrastructure(config, "dev", dry_run=False)
    elapsed = time.monotonic() - started

    error = caught.value
    assert 0.4 <= elapsed < 3, "waits until the deadline, not past it"
    assert error.code == "provisioning_timeout"
    assert error.transient is False
    assert "'stopped'" in error.message and identifier in error.message
    assert error.details["last_state"] == "stopped"
    assert f"aws rds start-db-instance --db-instance-identifier {identifier}" in error.suggestions[0]
    assert "wait_timeout" in " ".join(error.suggestions)
    still = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert still["DBInstanceStatus"] == "stopped", "dbinit never starts existing infrastructure"


def test_polling_backs_off_and_never_sleeps_past_the_deadline(
    tmp_path: Path, moto_url: str, rds: Any
) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="u",
    )
    rds.stop_db_instance(DBInstanceIdentifier=identifier)
    config = write_config(
        tmp_path, "aws-rds", aws_block(moto_url, identifier, wait_timeout=0.5, poll_interval=0.02)
    )
    target = aws_target(config, "dev")
    client = rds_client(target.settings)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    def state() -> str | None:
        found = find_instance(client, identifier, config_key=target.config_key)
        return found["DBInstanceStatus"] if found else None

    with pytest.raises(ProvisioningError):
        wait_until_available(state, what="it", target=target, deadline=Deadline(0.5), sleep=sleep)

    assert pauses[0] == pytest.approx(0.02)
    # Each pause is longer than the one before, except the last, which is cut to the deadline.
    assert all(later > earlier for earlier, later in itertools.pairwise(pauses[:-1]))
    assert sum(pauses) <= 0.5 + 1e-6
    assert len(pauses) < 0.5 / 0.02, "fewer polls than a fixed interval would make"


# --- the master secret --------------------------------------------------------------------------


def test_master_secret_is_read_at_use_and_never_carried(
    tmp_path: Path, moto_url: str, rds: Any, secrets: Any
) -> None:
    identifier = unique_id()
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, identifier))
    infra = ensure_aws_infrastructure(config, "dev", dry_run=False)
    described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    password = master_password(secrets, described)
    secret = json.loads(
        secrets.get_secret_value(SecretId=described["MasterUserSecret"]["SecretArn"])["SecretString"]
    )

    ref = infra.server_ref("postgresql")

    assert ref.secret_source.startswith("aws-secret:arn:aws:secretsmanager:")
    assert ref.host == described["Endpoint"]["Address"]
    assert ref.port == described["Endpoint"]["Port"]
    url = ref.url("appdb")
    assert url.password == password
    assert url.username == secret["username"]
    assert url.database == "appdb"
    # Nothing that flows between stages or into a response holds it; and once read it is redacted.
    assert_secret_free(password, ref.url_display, repr(ref), json.dumps(infra.details()))
    assert password not in redact(f"connection failed for {password}")


def test_no_secret_and_no_connection_variable_says_what_to_set(
    tmp_path: Path, moto_url: str, rds: Any
) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="u",
        MasterUserPassword="not-managed-1",
    )
    config = write_config(
        tmp_path, "aws-rds", aws_block(moto_url, identifier), connection_string_env="DEV_DATABASE_URL"
    )
    infra = ensure_aws_infrastructure(config, "dev", dry_run=False)

    with pytest.raises(DbinitError) as caught:
        infra.server_ref("postgresql", "DEV_DATABASE_URL")

    assert caught.value.code == "missing_connection_variable"
    assert "DEV_DATABASE_URL" in caught.value.suggestions[0]
    assert "--manage-master-user-password" in caught.value.suggestions[1]


# --- error classification -----------------------------------------------------------------------


def test_invalid_parameter_combination_is_permanent_and_names_the_settings(
    tmp_path: Path, moto_url: str, rds: Any
) -> None:
    identifier = unique_id()
    # AWS refuses a storage-autoscaling ceiling below the allocated storage.
    settings = aws_block(moto_url, identifier, allocated_storage=50, max_allocated_storage=30)
    config = write_config(tmp_path, "aws-rds", settings)

    with pytest.raises(ProvisioningError) as caught:
        ensure_aws_infrastructure(config, "dev", dry_run=False)

    error = caught.value
    assert error.code == "aws_invalid_request"
    assert error.transient is False
    assert "InvalidParameterCombination" in error.message
    assert "Max storage size must be greater than storage size" in error.message
    assert "environments.dev.aws" in error.suggestions[0]
    assert identifier not in instance_ids(rds)


def test_missing_subnet_group_is_permanent(tmp_path: Path, moto_url: str) -> None:
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, unique_id(), subnet_group="no-such-group"))

    with pytest.raises(ProvisioningError) as caught:
        ensure_aws_infrastructure(config, "dev", dry_run=False)

    assert caught.value.code == "aws_invalid_request"
    assert caught.value.transient is False
    assert "no-such-group" in caught.value.message


def test_access_denied_and_bad_credentials_are_permanent(
    tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION)
    user = unique_id("nobody")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, unique_id(), max_attempts=1))
    set_moto_auth(moto_url, "0")
    try:
        # A known identity without any IAM policy.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        with pytest.raises(ProvisioningError) as denied:
            ensure_aws_infrastructure(config, "dev", dry_run=False)
        # Keys AWS does not know.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        with pytest.raises(ProvisioningError) as unknown:
            ensure_aws_infrastructure(config, "dev", dry_run=False)
    finally:
        set_moto_auth(moto_url, "inf")

    assert denied.value.code == "aws_access_denied"
    assert denied.value.transient is False
    assert "rds:DescribeDBInstances" in denied.value.message
    assert any("IAM policy" in s for s in denied.value.suggestions)
    assert any("aws sts get-caller-identity" in s for s in denied.value.suggestions)
    assert unknown.value.code == "aws_credentials_invalid"
    assert unknown.value.transient is False


@pytest.mark.parametrize(
    ("action", "status", "aws_code", "code", "transient"),
    [
        ("DescribeDBInstances", 400, "Throttling", "aws_throttled", True),
        ("DescribeDBInstances", 503, "ServiceUnavailable", "aws_unavailable", True),
        ("CreateDBInstance", 400, "InstanceQuotaExceeded", "aws_quota_exceeded", False),
        ("CreateDBInstance", 400, "StorageQuotaExceeded", "aws_quota_exceeded", False),
        ("CreateDBInstance", 400, "InsufficientDBInstanceCapacity", "aws_insufficient_capacity", False),
    ],
)
def test_aws_errors_moto_cannot_produce_are_classified(
    tmp_path: Path, action: str, status: int, aws_code: str, code: str, transient: bool
) -> None:
    with RdsErrorServer({action: (status, aws_code, "Refused by the test server")}) as server:
        config = write_config(tmp_path, "aws-rds", aws_block(server.url, unique_id(), max_attempts=1))
        with pytest.raises(ProvisioningError) as caught:
            ensure_aws_infrastructure(config, "dev", dry_run=False)

    assert caught.value.code == code
    assert caught.value.transient is transient
    assert aws_code in caught.value.message
    assert caught.value.suggestions


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    with RdsErrorServer({}) as server:
        closed = server.url  # a port that was open a moment ago and is closed now
    config = write_config(tmp_path, "aws-rds", aws_block(closed, unique_id(), max_attempts=1))

    with pytest.raises(ProvisioningError) as caught:
        ensure_aws_infrastructure(config, "dev", dry_run=False)

    assert caught.value.code == "aws_unreachable"
    assert caught.value.transient is True
    assert "endpoint_url" in " ".join(caught.value.suggestions)


def test_connection_dropped_before_an_answer_is_transient(tmp_path: Path) -> None:
    # A server that accepts and hangs up: botocore's HTTPClientError family, like a read timeout.
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    config = write_config(tmp_path, "aws-rds", aws_block(url, unique_id(), max_attempts=1))
    try:
        with pytest.raises(ProvisioningError) as caught:
            ensure_aws_infrastructure(config, "dev", dry_run=False)
    finally:
        listener.close()

    assert caught.value.code == "aws_unreachable"
    assert caught.value.transient is True


def test_engine_that_does_not_fit_the_provider_names_the_key(tmp_path: Path, moto_url: str) -> None:
    config = write_config(tmp_path, "aws-rds", aws_block(moto_url, unique_id(), engine="mysql"))

    with pytest.raises(DbinitError) as caught:
        ensure_aws_infrastructure(config, "dev", dry_run=False)

    assert caught.value.code == "configuration_error"
    assert "environments.dev.aws.engine" in caught.value.message
    assert "postgres" in caught.value.suggestions[0]


# --- disk space ---------------------------------------------------------------------------------


def test_disk_space_comes_from_cloudwatch(tmp_path: Path, moto_url: str, rds: Any) -> None:
    identifier, empty = unique_id(), unique_id()
    for name in (identifier, empty):
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            Engine="postgres",
            DBInstanceClass="db.t3.micro",
            AllocatedStorage=20,
            MasterUsername="u",
        )
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_url, region_name=REGION)
    cloudwatch.put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[
            {
                "MetricName": "FreeStorageSpace",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": identifier}],
                "Value": 1.5 * 1024**3,
                "Unit": "Bytes",
            }
        ],
    )

    low = aws_disk_space(write_config(tmp_path, "aws-rds", aws_block(moto_url, identifier)), "dev")
    unknown = aws_disk_space(write_config(tmp_path, "aws-rds", aws_block(moto_url, empty)), "dev")

    assert low["status"] == "degraded"  # 1.5 GiB free of 20 GiB: under a tenth
    assert low["free_bytes"] == int(1.5 * 1024**3)
    assert low["source"] == "cloudwatch"
    assert low["metric"] == "FreeStorageSpace"
    assert low["free_percent"] == 7.5
    assert unknown["status"] == "unknown"
    assert unknown["free_bytes"] is None
    assert "no FreeStorageSpace datapoint" in unknown["reason"]


def test_aurora_disk_space_is_the_writers_local_storage(tmp_path: Path, moto_url: str) -> None:
    # Aurora publishes no FreeStorageSpace (its volume grows by itself); its writer's local disk
    # (temporary files) is what can fill up.
    identifier = unique_id("aurora")
    config = write_config(tmp_path, "aws-aurora", aws_block(moto_url, identifier))
    infra = ensure_aws_infrastructure(config, "dev", dry_run=False)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_url, region_name=REGION)
    cloudwatch.put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[
            {
                "MetricName": "FreeLocalStorage",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": str(infra.writer)}],
                "Value": 10 * 1024**3,
                "Unit": "Bytes",
            }
        ],
    )

    space = aws_disk_space(config, "dev")

    assert space["status"] == "healthy"
    assert space["free_bytes"] == 10 * 1024**3
    assert space["metric"] == "FreeLocalStorage"
    assert space["identifier"] == infra.writer


# --- through provision() and the job ------------------------------------------------------------


def test_provision_reports_identifier_and_endpoint_and_uses_the_connection_variable(
    project: Project, moto_url: str, rds: Any, secrets: Any
) -> None:
    identifier = unique_id()
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "hosting": "aws-rds",
                "aws": aws_block(moto_url, identifier),
            }
        }
    )
    config = project.config()
    plan = build_plan(config, "dev", InitParams(), run_id="test")

    found = provision(config, plan)

    assert found.infrastructure == "provisioned"
    described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert found.details["identifier"] == identifier
    assert found.details["endpoint"].startswith(described["Endpoint"]["Address"])
    assert found.details["connection"] == f"environment variable {TEST_URL_VAR}"
    assert found.server.secret_source == f"env:{TEST_URL_VAR}"
    again = provision(config, plan)
    assert again.infrastructure == "existing"
    assert_secret_free(master_password(secrets, described), json.dumps(found.details), repr(found.server))


@pytest.mark.parametrize("hosting", ["aws-rds", "aws-aurora"])
def test_job_provisions_on_moto_then_initializes_postgresql(
    project: Project, moto_url: str, rds: Any, secrets: Any, hosting: str
) -> None:
    identifier = unique_id()
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "hosting": hosting,
                "aws": aws_block(moto_url, identifier, tags={"team": "data"}),
            }
        }
    )
    name = project.database()

    first = project.run(database_name=name)

    assert first["status"] == "success", first
    assert first["result"]["hosting"] == hosting
    assert first["result"]["infrastructure"] == "provisioned"
    assert first["result"]["database"] == "created"
    assert project.server.database_exists(name)
    assert set(CORE_TABLES) <= project.server.tables(name)
    if hosting == "aws-aurora":
        described = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
    else:
        described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert tags_of(described) == {"team": "data", ENVIRONMENT_TAG: "dev"}
    infrastructure = (instance_ids(rds), cluster_ids(rds))

    second = project.run(database_name=name)

    assert second["status"] == "success", second
    assert second["result"]["infrastructure"] == "existing"
    assert second["result"]["migrations_applied"] == 0
    details = second["result"]["infrastructure_details"]
    assert identifier in json.dumps(details)
    # The disk of an AWS server is CloudWatch's to tell, never a made-up local pass.
    disk = second["result"]["health"]["disk"]
    assert disk["source"] == "cloudwatch"
    assert disk["status"] in {"healthy", "degraded", "unknown"}
    if disk["status"] == "unknown":
        assert disk["reason"]
    assert (instance_ids(rds), cluster_ids(rds)) == infrastructure
    log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
    secret_values = [master_password(secrets, described), project.server.password or "unset-password"]
    for secret in secret_values:
        assert_secret_free(secret, json.dumps(first), json.dumps(second), log_text)


def test_job_dry_run_on_aws_creates_nothing(project: Project, moto_url: str, rds: Any) -> None:
    identifier = unique_id()
    project.write_config(environments={"dev": {"hosting": "aws-rds", "aws": aws_block(moto_url, identifier)}})
    name = project.database()
    before = instance_ids(rds)

    response = project.run(database_name=name, dry_run=True, sql=True)

    assert response["status"] == "success", response
    assert response["result"]["infrastructure"] == "would_provision"
    assert response["result"]["database"] == "would_create"
    assert "CREATE TABLE users" in response["result"]["plan"]["sql"]["core"]
    assert instance_ids(rds) == before
    assert not project.server.database_exists(name)


def test_job_without_connection_variable_uses_endpoint_and_secret_and_never_shows_it(
    project: Project, moto_url: str, rds: Any, secrets: Any
) -> None:
    identifier = unique_id()
    project.write_config(environments={"dev": {"hosting": "aws-rds", "aws": aws_block(moto_url, identifier)}})

    response = project.run(database_name=project.database())

    # moto's endpoint is a name no DNS resolves: the run gets as far as connecting with the secret.
    assert response["status"] == "error"
    assert response["stage"] == "provision"
    described = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    assert response["details"]["identifier"] == identifier
    assert response["details"]["connection"] == "endpoint and master secret"
    assert described["Endpoint"]["Address"] in response["details"]["endpoint"]
    assert any("security group" in s for s in response["recovery"]["suggestions"])
    password = master_password(secrets, described)
    assert_secret_free(
        password, json.dumps(response), (project.root / ".dbinit" / "operations.jsonl").read_text()
    )


def test_job_deadline_failure_is_not_retried_and_says_what_to_do(
    project: Project, moto_url: str, rds: Any
) -> None:
    identifier = unique_id()
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="u",
        ManageMasterUserPassword=True,
    )
    rds.stop_db_instance(DBInstanceIdentifier=identifier)
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "hosting": "aws-rds",
                "aws": aws_block(moto_url, identifier, wait_timeout=0.2, poll_interval=0.02),
            }
        }
    )

    started = time.monotonic()
    response = project.run(database_name=project.database())

    assert time.monotonic() - started < 10, "a passed deadline is not retried"
    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["code"] == "provisioning_timeout"
    assert response["transient"] is False
    assert response["details"]["last_state"] == "stopped"
    assert any("start-db-instance" in s for s in response["recovery"]["suggestions"])


@pytest.mark.parametrize(
    ("aws_code", "status", "code", "attempts"),
    [("Throttling", 400, "aws_throttled", 4), ("AccessDenied", 403, "aws_access_denied", 1)],
)
def test_job_retries_throttling_and_not_access_denied(
    project: Project, aws_code: str, status: int, code: str, attempts: int
) -> None:
    with RdsErrorServer({"DescribeDBInstances": (status, aws_code, "Refused by the test server")}) as server:
        project.write_config(
            environments={
                "dev": {
                    "connection_string_env": TEST_URL_VAR,
                    "hosting": "aws-rds",
                    "aws": aws_block(server.url, unique_id(), max_attempts=1),
                }
            }
        )
        response = project.run(database_name=project.database())

    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["code"] == code
    assert server.calls["DescribeDBInstances"] == attempts  # the stage's retry policy: 1 + 3
    assert response["recovery"]["suggestions"]


@pytest.mark.parametrize(
    ("hosting", "code", "names"),
    [
        ("gcp-sql", "configuration_error", "environments.dev.gcp.project"),
        ("azure-sql", "configuration_error", "environments.dev.azure.subscription_id"),
    ],
)
def test_gcp_and_azure_without_settings_fail_at_provision_saying_what_to_set(
    project: Project, monkeypatch: pytest.MonkeyPatch, hosting: str, code: str, names: str
) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    project.write_config(environments={"dev": {"connection_string_env": TEST_URL_VAR, "hosting": hosting}})
    name = project.database()

    response = project.run(database_name=name)

    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["code"] == code
    assert names in response["error"] + " ".join(response["recovery"]["suggestions"])
    assert not project.server.database_exists(name)
