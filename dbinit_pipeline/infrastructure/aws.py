"""AWS hosting: the RDS instance (`aws-rds`) or Aurora cluster (`aws-aurora`) of an environment.

Find it by identifier; create what is missing (never start, modify or delete what exists); wait
until it is available under a deadline; read its endpoint and its master secret. Every botocore
error becomes one of the project's errors here, with whether a retry can help and what to do.
The master password lives in Secrets Manager (`ManageMasterUserPassword`) and is read at the
moment a connection is made, never stored in a result.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from sqlalchemy.engine import URL

from dbinit_pipeline.configuration import AwsSettings, LoadedConfig
from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.database.server import ServerRef
from dbinit_pipeline.errors import (
    AuthenticationFailure,
    ConfigurationError,
    DbinitError,
    ErrorCode,
    PermissionDenied,
    ProvisioningError,
    classify,
)
from dbinit_pipeline.infrastructure.cloud import FoundInfrastructure
from dbinit_pipeline.redaction import register_secret

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBClusterTypeDef, DBInstanceTypeDef, TagTypeDef
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger(__name__)

AWS_HOSTINGS = ("aws-rds", "aws-aurora")
ENVIRONMENT_TAG = "dbinit/environment"
SECRET_SOURCE_KIND = "aws-secret"
AVAILABLE = "available"
MAX_POLL_INTERVAL_S = 60.0
BACKOFF_FACTOR = 1.5
GIB = 1024**3
# Disk space is "degraded" below a tenth of the allocated storage, or 2 GiB where none is allocated.
DEGRADED_FREE_FRACTION = 0.10
DEGRADED_FREE_BYTES = 2 * GIB

# database.provider -> default engine per hosting, and engine -> the provider it speaks.
_DEFAULT_ENGINES = {
    ("postgresql", "aws-rds"): "postgres",
    ("postgresql", "aws-aurora"): "aurora-postgresql",
    ("mysql", "aws-rds"): "mysql",
    ("mysql", "aws-aurora"): "aurora-mysql",
}
_ENGINE_PROVIDER = {
    "postgres": "postgresql",
    "aurora-postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
}
# The smallest classes each hosting accepts: Aurora has no db.t3.micro.
_DEFAULT_CLASSES = {"aws-rds": "db.t3.micro", "aws-aurora": "db.t4g.medium"}
# RDS identifiers: a letter first, letters, digits and single hyphens, at most 63 characters.
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_IDENTIFIER_MAX = 63
_WRITER_SUFFIX = "-writer"

# States from which AWS will not reach "available" without someone acting: waiting is pointless.
_DEAD_ENDS = {
    "failed": "AWS could not bring it up; read its events and recreate it.",
    "incompatible-parameters": "Its parameter group has values the engine cannot start with: fix them.",
    "incompatible-network": "Its subnet group or VPC no longer fits it: fix the network settings.",
    "incompatible-option-group": "Its option group cannot be applied: fix or replace it.",
    "incompatible-restore": "A point-in-time restore failed: restore again or recreate it.",
    "incompatible-credentials": "Its Active Directory credentials are wrong: fix them.",
    "inaccessible-encryption-credentials": "Its KMS key is disabled or deleted: restore access to the key.",
    "restore-error": "A restore failed: restore again or recreate it.",
    "storage-full": "It ran out of storage: raise its allocated storage (aws rds modify-db-instance).",
    "deleting": "It is being deleted: wait until it is gone, then rerun to create it again, "
    "or choose another identifier.",
}

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServiceError",
    }
)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
        "NotAuthorized",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "AuthFailure",
    }
)
_CAPACITY_CODES = frozenset(
    {
        "InsufficientDBInstanceCapacity",
        "InsufficientDBClusterCapacityFault",
        "InsufficientStorageClusterCapacity",
    }
)


# --- errors -------------------------------------------------------------------------------------


def aws_error(exc: BaseException, *, doing: str, config_key: str) -> DbinitError:
    """Turn a botocore exception raised while `doing` into a project error (transient or not)."""
    if isinstance(exc, DbinitError):
        return exc
    if isinstance(exc, ClientError):
        return _client_error(exc, doing=doing, config_key=config_key)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return ProvisioningError(
            f"No usable AWS credentials while {doing}: {exc}",
            code=ErrorCode.AWS_CREDENTIALS_MISSING,
            suggestions=[
                "Give this process AWS credentials: AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or an instance/task role.",
                "Check them with: aws sts get-caller-identity",
            ],
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        # Connection refused, DNS, connect or read timeouts: the network may come back.
        return ProvisioningError(
            f"AWS did not answer while {doing}: {exc}",
            code=ErrorCode.AWS_UNREACHABLE,
            transient=True,
            suggestions=[
                "Check network access from this machine to the AWS endpoint (proxy, VPC endpoint, firewall).",
                f"Check {config_key}.region and {config_key}.endpoint_url.",
            ],
        )
    if isinstance(exc, ParamValidationError):
        return ProvisioningError(
            f"Invalid AWS request while {doing}: {exc}",
            code=ErrorCode.AWS_INVALID_REQUEST,
            suggestions=[f"Fix the values under {config_key} named above."],
        )
    if isinstance(exc, BotoCoreError):
        return ProvisioningError(
            f"AWS client error while {doing}: {exc}",
            code=ErrorCode.AWS_ERROR,
            suggestions=[f"Read the error above; check {config_key} and the AWS credentials in use."],
        )
    return ProvisioningError(
        f"Unexpected {type(exc).__name__} while {doing}: {exc}",
        code=ErrorCode.AWS_ERROR,
        suggestions=["This is likely a bug in dbinit_pipeline: rerun with --verbose and report it."],
    )


def _client_error(exc: ClientError, *, doing: str, config_key: str) -> DbinitError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    text = f"AWS refused {exc.operation_name} while {doing}: {code}: {message}"
    details = {"aws_error_code": code, "aws_operation": exc.operation_name}
    if code in _TRANSIENT_CODES or status >= 500:
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_THROTTLED
            if "throttl" in code.lower() or "limit" in code.lower()
            else ErrorCode.AWS_UNAVAILABLE,
            transient=True,
            details=details,
            suggestions=[
                "AWS is throttling or briefly unavailable: the stage retries with backoff.",
                "If it persists, other tools may be calling the same API: spread them out, "
                "or request a higher API rate quota.",
            ],
        )
    if code in _ACCESS_CODES:
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_ACCESS_DENIED,
            details=details,
            suggestions=[
                "Allow the identity in use the action named above in its IAM policy.",
                "dbinit needs rds:DescribeDBInstances, rds:DescribeDBClusters, rds:CreateDBInstance, "
                "rds:CreateDBCluster, rds:AddTagsToResource and secretsmanager:GetSecretValue "
                "(plus kms:Decrypt on the secret's key).",
                "See which identity is in use: aws sts get-caller-identity",
            ],
        )
    if code in _CREDENTIAL_CODES:
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_CREDENTIALS_INVALID,
            details=details,
            suggestions=[
                "The AWS credentials in use are unknown, expired or mistyped: refresh them "
                "(aws sso login, new keys) and rerun.",
                "See which identity is in use: aws sts get-caller-identity",
            ],
        )
    if "QuotaExceeded" in code or code.endswith(("LimitExceeded", "LimitExceededException")):
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_QUOTA_EXCEEDED,
            details=details,
            suggestions=[
                "An AWS account quota is reached (instances, clusters or total storage in this region).",
                "Delete unused RDS instances or snapshots, or request an increase in the Service Quotas "
                "console (service: Amazon RDS).",
                f"Or choose another region in {config_key}.region.",
            ],
        )
    if code in _CAPACITY_CODES:
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_INSUFFICIENT_CAPACITY,
            details=details,
            suggestions=[
                f"AWS has no capacity for this instance class here now: choose another "
                f"{config_key}.instance_class, or another subnet group (other availability zones).",
                "Or rerun later.",
            ],
        )
    if code == "ResourceNotFoundException":
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_SECRET_MISSING,
            details=details,
            suggestions=[
                "The master secret named above is gone: let RDS manage it again "
                "(aws rds modify-db-instance/modify-db-cluster --manage-master-user-password), "
                "or set the environment's connection variable to a URL with credentials.",
            ],
        )
    if code.startswith("Invalid") or code.startswith("Missing") or "NotFound" in code or "Validation" in code:
        return ProvisioningError(
            text,
            code=ErrorCode.AWS_INVALID_REQUEST,
            details=details,
            suggestions=[
                f"AWS refused the settings: fix the value named above under {config_key} "
                "(engine, engine_version, instance_class, allocated_storage, max_allocated_storage, "
                "subnet_group, security_groups) and rerun.",
                "List what an engine accepts: aws rds describe-orderable-db-instance-options --engine ENGINE",
            ],
        )
    return ProvisioningError(
        text,
        code=ErrorCode.AWS_ERROR,
        details=details,
        suggestions=[f"Read the AWS error above; check {config_key} and the AWS account."],
    )


@contextmanager
def _converted(doing: str, config_key: str) -> Iterator[None]:
    try:
        yield
    except DbinitError:
        raise
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, doing=doing, config_key=config_key) from None


# --- what to find or create ---------------------------------------------------------------------


@dataclass(frozen=True)
class AwsTarget:
    """The instance or cluster one environment asks for, with every default decided."""

    environment: str
    hosting: str  # aws-rds | aws-aurora
    identifier: str
    engine: str
    instance_class: str
    protected: bool
    settings: AwsSettings

    @property
    def config_key(self) -> str:
        return f"environments.{self.environment}.aws"

    @property
    def is_cluster(self) -> bool:
        return self.hosting == "aws-aurora"

    @property
    def kind(self) -> str:
        return "Aurora cluster" if self.is_cluster else "RDS instance"

    @property
    def writer_identifier(self) -> str:
        """The writer instance of an Aurora cluster."""
        base = self.identifier[: _IDENTIFIER_MAX - len(_WRITER_SUFFIX)].rstrip("-")
        return base + _WRITER_SUFFIX

    def tags(self) -> list[TagTypeDef]:
        tags = {**self.settings.tags, ENVIRONMENT_TAG: self.environment}
        return [{"Key": key, "Value": value} for key, value in tags.items()]


def default_identifier(project: str, environment: str) -> str:
    """`<project>-<env>`, folded to what RDS accepts as an identifier."""
    folded = re.sub(r"[^a-z0-9]+", "-", f"{project}-{environment}".lower()).strip("-")
    if not folded[:1].isalpha():
        folded = f"db-{folded}"
    return folded[:_IDENTIFIER_MAX].rstrip("-")


def aws_target(config: LoadedConfig, environment: str) -> AwsTarget:
    """The environment's AWS settings with defaults applied; bad values name their key."""
    env = config.environment(environment)
    hosting = config.hosting(environment)
    if hosting not in AWS_HOSTINGS:
        raise ConfigurationError(
            f"environment {environment!r} has hosting {hosting!r}, not aws-rds or aws-aurora",
            suggestions=[f"Set environments.{environment}.hosting: aws-rds or aws-aurora in {config.path}."],
        )
    settings = env.aws or AwsSettings()
    key = f"environments.{environment}.aws"
    provider = config.model.database.provider
    identifier = (settings.identifier or default_identifier(config.model.project, environment)).lower()
    if len(identifier) > _IDENTIFIER_MAX or not _IDENTIFIER.match(identifier):
        raise ConfigurationError(
            f"{key}.identifier {identifier!r} is not a valid RDS identifier ({config.path})",
            suggestions=[
                "Use 1 to 63 letters, digits and hyphens, starting with a letter, "
                "without two hyphens in a row or a hyphen at the end."
            ],
        )
    engine = settings.engine or _DEFAULT_ENGINES[(provider, hosting)]
    speaks = _ENGINE_PROVIDER.get(engine)
    cluster_engine = engine.startswith("aurora")
    if speaks != provider or cluster_engine != (hosting == "aws-aurora"):
        expected = sorted(
            e
            for e, p in _ENGINE_PROVIDER.items()
            if p == provider and e.startswith("aurora") == (hosting == "aws-aurora")
        )
        raise ConfigurationError(
            f"{key}.engine {engine!r} does not fit database.provider {provider!r} with hosting "
            f"{hosting!r} ({config.path})",
            suggestions=[f"Use engine {' or '.join(expected)}, or leave {key}.engine unset."],
        )
    return AwsTarget(
        environment=environment,
        hosting=hosting,
        identifier=identifier,
        engine=engine,
        instance_class=settings.instance_class or _DEFAULT_CLASSES[hosting],
        protected=config.is_protected(environment),
        settings=settings,
    )


# --- clients ------------------------------------------------------------------------------------


def _client(service: str, region: str, endpoint_url: str | None, max_attempts: int) -> Any:
    """A boto3 client with standard retries (`max_attempts` counts every call, the first included);
    credentials come from the default chain."""
    import boto3

    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"}),
    )


def rds_client(settings: AwsSettings) -> RDSClient:
    """An RDS client (credentials from the default chain)."""
    return cast("RDSClient", _client("rds", settings.region, settings.endpoint_url, settings.max_attempts))


# Every connection reads the secret again (rotation may change it); the client, whose creation
# loads the service model, is made once per process. boto3 clients are thread-safe.
@lru_cache(maxsize=8)
def secrets_client(region: str, endpoint_url: str | None, max_attempts: int = 5) -> SecretsManagerClient:
    """A Secrets Manager client."""
    return cast("SecretsManagerClient", _client("secretsmanager", region, endpoint_url, max_attempts))


def cloudwatch_client(settings: AwsSettings) -> CloudWatchClient:
    """A CloudWatch client."""
    return cast(
        "CloudWatchClient",
        _client("cloudwatch", settings.region, settings.endpoint_url, settings.max_attempts),
    )


# --- find, create -------------------------------------------------------------------------------


def find_instance(rds: RDSClient, identifier: str, *, config_key: str) -> DBInstanceTypeDef | None:
    """The DB instance named `identifier`, or None when there is none."""
    with _converted(f"looking for RDS instance {identifier}", config_key):
        try:
            found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except rds.exceptions.DBInstanceNotFoundFault:
            return None
    return found[0] if found else None


def find_cluster(rds: RDSClient, identifier: str, *, config_key: str) -> DBClusterTypeDef | None:
    """The DB cluster named `identifier`, or None when there is none."""
    with _converted(f"looking for Aurora cluster {identifier}", config_key):
        try:
            found = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"]
        except rds.exceptions.DBClusterNotFoundFault:
            return None
    return found[0] if found else None


def _common_create_parameters(target: AwsTarget) -> dict[str, Any]:
    settings = target.settings
    params: dict[str, Any] = {
        "Engine": target.engine,
        "MasterUsername": settings.master_username,
        # RDS generates the password and keeps it in Secrets Manager: it never passes through us.
        "ManageMasterUserPassword": True,
        "DeletionProtection": target.protected,
        "Tags": target.tags(),
    }
    if settings.engine_version:
        params["EngineVersion"] = settings.engine_version
    if settings.subnet_group:
        params["DBSubnetGroupName"] = settings.subnet_group
    if settings.security_groups:
        params["VpcSecurityGroupIds"] = list(settings.security_groups)
    return params


def create_instance(rds: RDSClient, target: AwsTarget) -> bool:
    """Create the RDS instance of `target` (aws-rds); False when another run just created it."""
    settings = target.settings
    params = _common_create_parameters(target)
    params.update(
        DBInstanceIdentifier=target.identifier,
        DBInstanceClass=target.instance_class,
        AllocatedStorage=settings.allocated_storage,
    )
    if settings.max_allocated_storage is not None:
        params["MaxAllocatedStorage"] = settings.max_allocated_storage
    with _converted(f"creating RDS instance {target.identifier}", target.config_key):
        try:
            rds.create_db_instance(**params)
        except rds.exceptions.DBInstanceAlreadyExistsFault:
            return False  # created between our look and our create: found, then
    log.info("created RDS instance %s", target.identifier)
    return True


def create_cluster(rds: RDSClient, target: AwsTarget) -> bool:
    """Create the Aurora cluster of `target`, without instances; False when it exists already."""
    params = _common_create_parameters(target)
    params["DBClusterIdentifier"] = target.identifier
    with _converted(f"creating Aurora cluster {target.identifier}", target.config_key):
        try:
            rds.create_db_cluster(**params)
        except rds.exceptions.DBClusterAlreadyExistsFault:
            return False
    log.info("created Aurora cluster %s", target.identifier)
    return True


def create_writer(rds: RDSClient, target: AwsTarget) -> bool:
    """Create the first instance of the cluster, which Aurora makes its writer; False if it exists."""
    with _converted(f"creating writer instance {target.writer_identifier}", target.config_key):
        try:
            rds.create_db_instance(
                DBInstanceIdentifier=target.writer_identifier,
                DBClusterIdentifier=target.identifier,
                Engine=target.engine,
                DBInstanceClass=target.instance_class,
                Tags=target.tags(),
            )
        except rds.exceptions.DBInstanceAlreadyExistsFault:
            return False
    log.info("created writer instance %s in cluster %s", target.writer_identifier, target.identifier)
    return True


def _writer_of(cluster: DBClusterTypeDef) -> str | None:
    for member in cluster.get("DBClusterMembers", []):
        if member.get("IsClusterWriter"):
            return member.get("DBInstanceIdentifier")
    return None


def _check_ownership(tags: list[TagTypeDef], target: AwsTarget) -> None:
    """Refuse a resource that dbinit created for another environment (an identifier clash)."""
    owner = next((t.get("Value") for t in tags if t.get("Key") == ENVIRONMENT_TAG), None)
    if owner is not None and owner != target.environment:
        raise ConfigurationError(
            f"{target.kind} {target.identifier} belongs to environment {owner!r} "
            f"(tag {ENVIRONMENT_TAG}), not {target.environment!r}",
            code=ErrorCode.INFRASTRUCTURE_OWNED_ELSEWHERE,
            suggestions=[
                f"Give environment {target.environment!r} its own {target.config_key}.identifier.",
                f"Or, if it really is meant to be shared, retag it: {ENVIRONMENT_TAG}={target.environment}.",
            ],
        )


def _check_engine(engine: str | None, target: AwsTarget) -> None:
    speaks = _ENGINE_PROVIDER.get(engine or "")
    wanted = _ENGINE_PROVIDER[target.engine]
    if speaks != wanted:
        raise ConfigurationError(
            f"{target.kind} {target.identifier} runs engine {engine!r}, but database.provider is {wanted!r}",
            code=ErrorCode.INFRASTRUCTURE_ENGINE_MISMATCH,
            suggestions=[
                "Point the environment at an instance of the right engine "
                f"({target.config_key}.identifier), or change database.provider."
            ],
        )


# --- waiting ------------------------------------------------------------------------------------


class Deadline:
    """A point in time, shared by every wait of one provisioning."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._started = clock()

    def remaining(self) -> float:
        return self._started + self.seconds - self._clock()

    def elapsed(self) -> float:
        return self._clock() - self._started


def wait_until_available(
    read_state: Callable[[], str | None],
    *,
    what: str,
    target: AwsTarget,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll `read_state` with growing pauses until it says "available" or the deadline passes."""
    interval = target.settings.poll_interval
    polls = 0
    warned_stopped = False
    while True:
        state = read_state()
        polls += 1
        if state is None:
            raise ProvisioningError(
                f"{what} disappeared while waiting for it to become available",
                code=ErrorCode.INFRASTRUCTURE_VANISHED,
                details={"identifier": target.identifier, "polls": polls},
                suggestions=["Someone deleted it: rerun to create it again, or find out who did."],
            )
        if state == AVAILABLE:
            return state
        if state in _DEAD_ENDS:
            raise ProvisioningError(
                f"{what} is in state {state!r} and will not become available by itself",
                code=ErrorCode.INFRASTRUCTURE_UNUSABLE,
                details={"identifier": target.identifier, "last_state": state},
                suggestions=[_DEAD_ENDS[state], _events_hint(target)],
            )
        if state == "stopped" and not warned_stopped:
            # dbinit never starts what exists (someone stopped it, maybe to save money); say so early.
            log.warning("%s is stopped; dbinit does not start it; waiting until the deadline", what)
            warned_stopped = True
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _deadline_passed(what, state, target, deadline, polls)
        log.info("%s is %s; next look in %.1fs", what, state, min(interval, remaining))
        sleep(min(interval, remaining))
        interval = min(interval * BACKOFF_FACTOR, max(MAX_POLL_INTERVAL_S, target.settings.poll_interval))


def _events_hint(target: AwsTarget) -> str:
    source_type = "db-cluster" if target.is_cluster else "db-instance"
    return (
        f"See what AWS says about it: aws rds describe-events --source-type {source_type} "
        f"--source-identifier {target.identifier} --region {target.settings.region}"
    )


def _deadline_passed(
    what: str, state: str, target: AwsTarget, deadline: Deadline, polls: int
) -> ProvisioningError:
    region = target.settings.region
    if state in ("stopped", "stopping"):
        kind = "cluster" if target.is_cluster else "instance"
        command = f"start-db-{kind} --db-{kind}-identifier"
        first = (
            f"It is {state}; dbinit does not start existing infrastructure. Start it: "
            f"aws rds {command} {target.identifier} --region {region}, then rerun."
        )
    else:
        first = (
            f"AWS is still working on it ({state}): rerun later; the run finds it and reuses it, "
            "creating nothing twice."
        )
    return ProvisioningError(
        f"{what} is not available after {deadline.seconds:g}s: its last state was {state!r}",
        code=ErrorCode.PROVISIONING_TIMEOUT,
        details={
            "identifier": target.identifier,
            "last_state": state,
            "waited_s": round(deadline.elapsed(), 1),
            "polls": polls,
        },
        suggestions=[
            first,
            f"Creation of a new instance often takes 5 to 20 minutes: raise {target.config_key}.wait_timeout "
            "(seconds) if it regularly takes longer.",
            _events_hint(target),
        ],
    )


# --- the whole of it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsInfrastructure(FoundInfrastructure):
    """What was found or created, and how to reach it; never a password."""

    hosting: str
    identifier: str
    region: str
    status: str
    created: tuple[str, ...] = ()
    would_create: tuple[str, ...] = ()
    endpoint: str | None = None
    port: int | None = None
    master_username: str | None = None
    secret_arn: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    deletion_protection: bool | None = None
    writer: str | None = None
    endpoint_url: str | None = None

    @property
    def login(self) -> str | None:
        return self.master_username

    def details(self) -> dict[str, Any]:
        """What the provision stage reports: identifier, endpoint, what was created."""
        details: dict[str, Any] = {
            "hosting": self.hosting,
            "identifier": self.identifier,
            "region": self.region,
            "status": self.status,
            "endpoint": f"{self.endpoint}:{self.port}" if self.endpoint else None,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "deletion_protection": self.deletion_protection,
            "master_secret_arn": self.secret_arn,
        }
        if self.writer:
            details["writer_instance"] = self.writer
        return self.with_changes(details)

    def server_ref(self, provider: str, connection_env: str | None = None) -> ServerRef:
        """The server at the endpoint; the password is read from the master secret when used."""
        maintenance = provider_for(provider).maintenance_database
        if not self.endpoint:
            raise ProvisioningError(
                f"{self.identifier} has no endpoint yet (state {self.status!r})",
                code=ErrorCode.ENDPOINT_MISSING,
                suggestions=["Rerun when it is available."],
            )
        if not self.secret_arn:
            var = connection_env or "the environment's connection variable"
            kind = "cluster" if self.hosting == "aws-aurora" else "instance"
            raise ConfigurationError(
                f"{self.identifier} does not keep its master password in Secrets Manager, and {var} is "
                "not set: dbinit has no credentials for it",
                code=ErrorCode.MISSING_CONNECTION_VARIABLE,
                suggestions=[
                    f"Set {var} to a URL with credentials for {self.endpoint}:{self.port}.",
                    f"Or let RDS manage the master password: aws rds modify-db-{kind} "
                    f"--db-{kind}-identifier {self.identifier} --manage-master-user-password "
                    "--apply-immediately",
                ],
            )
        url = URL.create(
            provider,
            username=self.master_username,
            host=self.endpoint,
            port=self.port,
            database=maintenance,
        )
        return ServerRef(
            provider,
            url.render_as_string(hide_password=True),
            secret_source(self.secret_arn, self.endpoint_url),
            maintenance,
        )


def ensure_aws_infrastructure(config: LoadedConfig, environment: str, *, dry_run: bool) -> AwsInfrastructure:
    """Find the environment's instance or cluster, create what is missing, wait until available.

    In a dry run nothing is created: missing parts are reported in `would_create`.
    """
    target = aws_target(config, environment)
    rds = rds_client(target.settings)
    deadline = Deadline(target.settings.wait_timeout)
    if target.is_cluster:
        return _ensure_cluster(rds, target, deadline, dry_run=dry_run)
    return _ensure_instance(rds, target, deadline, dry_run=dry_run)


def _ensure_instance(
    rds: RDSClient, target: AwsTarget, deadline: Deadline, *, dry_run: bool
) -> AwsInfrastructure:
    key = target.config_key
    settings = target.settings
    created: list[str] = []
    found = find_instance(rds, target.identifier, config_key=key)
    if found is None:
        if dry_run:
            return AwsInfrastructure(
                target.hosting,
                target.identifier,
                settings.region,
                "missing",
                would_create=(f"RDS instance {target.identifier}",),
                master_username=settings.master_username,
                engine=target.engine,
                deletion_protection=target.protected,
            )
        if create_instance(rds, target):
            created.append(f"RDS instance {target.identifier}")
    else:
        _check_ownership(found.get("TagList", []), target)
        _check_engine(found.get("Engine"), target)

    latest: dict[str, DBInstanceTypeDef | None] = {}

    def state() -> str | None:
        latest["instance"] = find_instance(rds, target.identifier, config_key=key)
        instance = latest["instance"]
        return instance.get("DBInstanceStatus") if instance else None

    status = wait_until_available(
        state, what=f"RDS instance {target.identifier}", target=target, deadline=deadline
    )
    instance = latest["instance"]
    assert instance is not None  # wait_until_available returned "available"
    endpoint = instance.get("Endpoint", {})
    return AwsInfrastructure(
        target.hosting,
        target.identifier,
        settings.region,
        status,
        created=tuple(created),
        endpoint=endpoint.get("Address"),
        port=endpoint.get("Port"),
        master_username=instance.get("MasterUsername"),
        secret_arn=instance.get("MasterUserSecret", {}).get("SecretArn"),
        engine=instance.get("Engine"),
        engine_version=instance.get("EngineVersion"),
        deletion_protection=instance.get("DeletionProtection"),
        endpoint_url=settings.endpoint_url,
    )


def _ensure_cluster(
    rds: RDSClient, target: AwsTarget, deadline: Deadline, *, dry_run: bool
) -> AwsInfrastructure:
    key = target.config_key
    settings = target.settings
    created: list[str] = []
    would_create: list[str] = []
    cluster = find_cluster(rds, target.identifier, config_key=key)
    if cluster is None:
        would_create += [f"Aurora cluster {target.identifier}", f"writer instance {target.writer_identifier}"]
        if not dry_run and create_cluster(rds, target):
            created.append(would_create[0])
    else:
        _check_ownership(cluster.get("TagList", []), target)
        _check_engine(cluster.get("Engine"), target)
        # A cluster without instances (an earlier run stopped between the two creates) needs its writer.
        if not cluster.get("DBClusterMembers"):
            would_create.append(f"writer instance {target.writer_identifier}")
    if dry_run and would_create:
        return AwsInfrastructure(
            target.hosting,
            target.identifier,
            settings.region,
            cluster.get("Status", "missing") if cluster else "missing",
            would_create=tuple(would_create),
            master_username=settings.master_username,
            engine=target.engine,
            deletion_protection=target.protected,
        )

    latest: dict[str, DBClusterTypeDef | None] = {}

    def cluster_state() -> str | None:
        latest["cluster"] = find_cluster(rds, target.identifier, config_key=key)
        found = latest["cluster"]
        return found.get("Status") if found else None

    what = f"Aurora cluster {target.identifier}"
    wait_until_available(cluster_state, what=what, target=target, deadline=deadline)
    cluster = latest["cluster"]
    assert cluster is not None
    if not cluster.get("DBClusterMembers"):
        if create_writer(rds, target):
            created.append(f"writer instance {target.writer_identifier}")
        writer = target.writer_identifier
    else:
        writer = _writer_of(cluster) or cluster["DBClusterMembers"][0]["DBInstanceIdentifier"]

    def writer_state() -> str | None:
        instance = find_instance(rds, writer, config_key=key)
        return instance.get("DBInstanceStatus") if instance else None

    wait_until_available(
        writer_state, what=f"writer instance {writer} of {what}", target=target, deadline=deadline
    )
    # Read the cluster again: its endpoint answers once the writer does.
    cluster = find_cluster(rds, target.identifier, config_key=key) or cluster
    return AwsInfrastructure(
        target.hosting,
        target.identifier,
        settings.region,
        cluster.get("Status", AVAILABLE),
        created=tuple(created),
        endpoint=cluster.get("Endpoint"),
        port=cluster.get("Port"),
        master_username=cluster.get("MasterUsername"),
        secret_arn=cluster.get("MasterUserSecret", {}).get("SecretArn"),
        engine=cluster.get("Engine"),
        engine_version=cluster.get("EngineVersion"),
        deletion_protection=cluster.get("DeletionProtection"),
        writer=writer,
        endpoint_url=settings.endpoint_url,
    )


def endpoint_error(exc: BaseException, infra: AwsInfrastructure, *, via: str) -> DbinitError:
    """The error for available infrastructure that does not answer (or refuses) on its endpoint."""
    if isinstance(exc, DbinitError):
        # Already ours (the master secret could not be read, say): its own advice fits better.
        exc.details = {**infra.details(), "connection": via, **exc.details}
        return exc
    error = classify(exc, during=f"connecting to {infra.identifier} ({via})")
    suggestions = list(error.suggestions)
    if not isinstance(error, (AuthenticationFailure, PermissionDenied)) and infra.endpoint:
        # The usual cause on AWS is the network path, not the server.
        suggestions = [
            f"Check that this machine reaches {infra.endpoint}:{infra.port}: a security group must allow "
            f"inbound traffic on port {infra.port} from here, and the instance must be publicly "
            "accessible or this machine inside its VPC.",
            "Or set the environment's connection variable to a URL through a tunnel or proxy that "
            "reaches it (when set, it is used instead of the endpoint).",
            *suggestions,
        ]
    return type(error)(
        error.message,
        code=error.code,
        transient=error.transient,
        suggestions=suggestions,
        details={**error.details, **infra.details(), "connection": via},
    )


# --- the master secret --------------------------------------------------------------------------


def secret_source(secret_arn: str, endpoint_url: str | None = None) -> str:
    """A `ServerRef.secret_source` naming a Secrets Manager secret: `aws-secret:ARN[|ENDPOINT_URL]`."""
    # "|" appears in neither an ARN nor a URL, so it separates them unambiguously.
    return f"{SECRET_SOURCE_KIND}:{secret_arn}" + (f"|{endpoint_url}" if endpoint_url else "")


def read_master_secret(
    secret_arn: str, *, endpoint_url: str | None = None, max_attempts: int = 5
) -> tuple[str, str]:
    """(username, password) of an RDS-managed master secret; the password is registered for redaction."""
    parts = secret_arn.split(":")
    if len(parts) < 7 or parts[2] != "secretsmanager":
        raise ConfigurationError(
            f"{secret_arn!r} is not a Secrets Manager secret ARN",
            code=ErrorCode.INVALID_SECRET_SOURCE,
            suggestions=["This is likely a bug in dbinit_pipeline: report it."],
        )
    region = parts[3]
    client = secrets_client(region, endpoint_url, max_attempts)
    with _converted(f"reading the master secret {secret_arn}", "environments.<env>.aws"):
        raw = client.get_secret_value(SecretId=secret_arn).get("SecretString") or ""
    try:
        value = json.loads(raw)
        username, password = str(value["username"]), str(value["password"])
    except (ValueError, KeyError, TypeError):
        raise ProvisioningError(
            f"The master secret {secret_arn} does not hold a JSON object with username and password",
            code=ErrorCode.AWS_SECRET_MALFORMED,
            suggestions=["Let RDS manage the secret again (--manage-master-user-password)."],
        ) from None
    register_secret(password)
    return username, password


def resolve_secret_source(where: str) -> tuple[str, str]:
    """(username, password) for the part after `aws-secret:` of a secret source."""
    arn, _, endpoint_url = where.partition("|")
    return read_master_secret(arn, endpoint_url=endpoint_url or None)


# --- disk space ---------------------------------------------------------------------------------


def aws_disk_space(config: LoadedConfig, environment: str) -> dict[str, Any]:
    """Free storage of the environment's RDS instance or Aurora writer, from CloudWatch; never raises.

    RDS publishes FreeStorageSpace; Aurora has no such metric (its cluster volume grows by itself),
    so for Aurora this reads the writer's FreeLocalStorage, the disk its temporary files use.
    """
    result: dict[str, Any] = {"status": "unknown", "free_bytes": None, "source": "cloudwatch"}
    try:
        target = aws_target(config, environment)
        rds = rds_client(target.settings)
        allocated: int | None = None
        if target.is_cluster:
            metric = "FreeLocalStorage"
            cluster = find_cluster(rds, target.identifier, config_key=target.config_key)
            writer = _writer_of(cluster) if cluster else None
            if writer is None:
                result["reason"] = f"Aurora cluster {target.identifier} has no writer instance to measure"
                return result
            instance_id = writer
        else:
            metric = "FreeStorageSpace"
            instance = find_instance(rds, target.identifier, config_key=target.config_key)
            if instance is None:
                result["reason"] = f"RDS instance {target.identifier} does not exist"
                return result
            instance_id = target.identifier
            allocated = instance.get("AllocatedStorage")
        result.update(metric=metric, identifier=instance_id)
        now = datetime.now(UTC)
        with _converted(f"reading {metric} of {instance_id} from CloudWatch", target.config_key):
            points = cloudwatch_client(target.settings).get_metric_statistics(
                Namespace="AWS/RDS",
                MetricName=metric,
                Dimensions=[{"Name": "DBInstanceIdentifier", "Value": instance_id}],
                StartTime=now - timedelta(hours=1),
                EndTime=now + timedelta(minutes=1),
                Period=60,
                Statistics=["Minimum"],
            )["Datapoints"]
    except DbinitError as exc:
        result["reason"] = exc.message
        return result
    except Exception as exc:  # a health check reports what it could not measure; it never fails
        result["reason"] = f"{type(exc).__name__} while reading disk space: {exc}"
        return result
    if not points:
        result["reason"] = f"CloudWatch has no {metric} datapoint for {instance_id} in the last hour"
        return result
    newest = max(points, key=lambda p: p["Timestamp"])
    free = int(newest["Minimum"])
    result.update(free_bytes=free, measured_at=newest["Timestamp"].isoformat())
    if allocated:
        total = allocated * GIB
        result.update(allocated_bytes=total, free_percent=round(100 * free / total, 1))
        low = free < DEGRADED_FREE_FRACTION * total
        threshold = f"{DEGRADED_FREE_FRACTION:.0%} of {allocated} GiB allocated"
    else:
        low = free < DEGRADED_FREE_BYTES
        threshold = f"{DEGRADED_FREE_BYTES // GIB} GiB"
    free_text = f"{free / GIB:.1f} GiB free"
    result["status"] = "degraded" if low else "healthy"
    result["reason"] = f"{free_text}, {'below' if low else 'above'} {threshold}"
    return result
