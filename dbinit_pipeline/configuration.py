"""The project configuration (`dbinit.yaml`), modelled with pydantic.

Secrets never live in the file: it names environment variables, and the values are read at
run time. Unknown keys and bad values are errors that name the key and the file.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dbinit_pipeline.errors import ConfigurationError, ErrorCode, InputError

Provider = Literal["postgresql", "mysql"]
Hosting = Literal["embedded", "local", "localhost", "aws-rds", "aws-aurora", "gcp-sql", "azure-sql"]
IfExists = Literal["reuse", "error", "recreate"]
IF_EXISTS: tuple[IfExists, ...] = get_args(IfExists)
TransactionMode = Literal["auto", "single", "per_package"]
CLOUD_HOSTINGS = ("aws-rds", "aws-aurora", "gcp-sql", "azure-sql")
ENV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED = ("public", "information_schema")


def check_core_schema(value: str | None) -> str | None:
    """`core.schema` as dbinit.yaml gives it, or a ValueError saying what a valid one is."""
    if value is None:
        return None
    if not SCHEMA_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a schema name dbinit uses: lowercase letters, digits and underscores "
            "(at most 63), starting with a letter or underscore"
        )
    if value in _RESERVED or value.startswith("pg_"):
        raise ValueError(
            f"{value!r} cannot hold the core: leave core.schema out for the default schema, or name "
            "a schema of its own such as dbinit_core"
        )
    return value


def refuse_core_schema_on(provider: str, schema: str | None) -> None:
    """A ValueError where `core.schema` is set for a server without schemas inside a database."""
    if schema is not None and provider != "postgresql":
        raise ValueError(
            f"core.schema ({schema!r}) is PostgreSQL only: on {provider} a schema is a database, so "
            "the core cannot live in one of its own inside the database; remove core.schema, or "
            "turn the core off with core: {enabled: false} for a history that owns its table names"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Strict):
    provider: Provider = "postgresql"
    hosting: Hosting = "embedded"
    migration_tool: Literal["alembic"] = "alembic"
    collation: str | None = Field(default=None, description="MySQL collation for CREATE DATABASE")


class RebuildSchedule(_Strict):
    cron: str
    timezone: str = "UTC"


class AwsSettings(_Strict):
    """`environments.<env>.aws`: the RDS instance or Aurora cluster of a cloud-hosted environment."""

    region: str = "us-east-1"
    identifier: str | None = Field(default=None, description="default: <project>-<env>")
    engine: str | None = Field(default=None, description="default: from database.provider and hosting")
    engine_version: str | None = None
    instance_class: str | None = Field(
        default=None, description="default: db.t3.micro (aws-rds), db.t4g.medium (aws-aurora writer)"
    )
    allocated_storage: int = Field(default=20, ge=20, description="GiB, aws-rds only")
    max_allocated_storage: int | None = Field(
        default=None, ge=20, description="GiB ceiling for storage autoscaling, aws-rds only"
    )
    master_username: str = "dbinit_admin"
    subnet_group: str | None = None
    security_groups: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = Field(default=None, description="for testing and private endpoints")
    wait_timeout: float = Field(default=600.0, gt=0, description="seconds until available")
    poll_interval: float = Field(default=15.0, gt=0, description="first pause between polls, seconds")
    max_attempts: int = Field(default=5, ge=1, description="calls per AWS request, retries included")


class GcpSettings(_Strict):
    """`environments.<env>.gcp`: the Cloud SQL instance of a `gcp-sql` environment."""

    project: str | None = Field(default=None, description="required for provisioning: the project id")
    region: str = "us-central1"
    instance: str | None = Field(default=None, description="default: <project>-<env>")
    database_version: str | None = Field(default=None, description="default: POSTGRES_16 or MYSQL_8_0")
    tier: str = "db-custom-1-3840"
    edition: Literal["ENTERPRISE", "ENTERPRISE_PLUS"] = "ENTERPRISE"
    disk_size_gb: int = Field(default=10, ge=10)
    disk_autoresize: bool = True
    disk_autoresize_limit_gb: int = Field(default=0, ge=0, description="0: no limit")
    private_network: str | None = Field(default=None, description="projects/<p>/global/networks/<vpc>")
    authorized_networks: list[str] = Field(default_factory=list, description="CIDR ranges for public IP")
    labels: dict[str, str] = Field(default_factory=dict)
    admin_user: str = "dbinit_admin"
    password_secret: str | None = Field(
        default=None, description="Secret Manager secret id; default: <instance>-dbinit-admin"
    )
    endpoint_url: str | None = Field(default=None, description="Cloud SQL Admin API root, for tests and PSC")
    secret_manager_endpoint_url: str | None = None
    monitoring_endpoint_url: str | None = None
    wait_timeout: float = Field(default=1200.0, gt=0, description="seconds until RUNNABLE")
    poll_interval: float = Field(default=10.0, gt=0, description="first pause between polls, seconds")
    max_attempts: int = Field(
        default=5, ge=1, description="calls per request, retries of throttling included"
    )


class AzureSettings(_Strict):
    """`environments.<env>.azure`: the flexible server of an `azure-sql` environment."""

    subscription_id: str | None = Field(default=None, description="default: $AZURE_SUBSCRIPTION_ID")
    resource_group: str | None = None
    location: str = "eastus"
    server: str | None = Field(default=None, description="default: <project>-<env>")
    version: str | None = Field(default=None, description="default: 16 (PostgreSQL), 8.0.21 (MySQL)")
    sku_name: str = "Standard_B1ms"
    sku_tier: Literal["Burstable", "GeneralPurpose", "MemoryOptimized"] = "Burstable"
    storage_gb: int = Field(default=32, ge=20)
    storage_auto_grow: bool = True
    administrator_login: str = "dbinit_admin"
    key_vault_url: str | None = Field(default=None, description="https://<vault>.vault.azure.net")
    password_secret: str | None = Field(default=None, description="Key Vault secret; default <server>-admin")
    tags: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = Field(default=None, description="Azure Resource Manager URL, for tests")
    authority_host: str | None = Field(default=None, description="Microsoft Entra authority, for tests")
    wait_timeout: float = Field(default=1800.0, gt=0, description="seconds until Ready")
    poll_interval: float = Field(default=10.0, gt=0, description="first pause between polls, seconds")
    max_attempts: int = Field(
        default=5, ge=1, description="calls per request, retries of throttling included"
    )


class TemplateSettings(_Strict):
    """`templates`: keep a verified template database per plan and clone it instead of replaying.

    PostgreSQL only. Off by default. The project-wide block applies to unprotected environments;
    a protected one uses templates only when its own `environments.<env>.templates.enabled` says so.
    """

    enabled: bool | None = Field(default=None, description="default: off")
    keep: int = Field(default=2, ge=1, le=50, description="templates kept per environment, newest first")
    clone_wait: float = Field(
        default=5.0, ge=0, description="seconds to wait for a template that is being refreshed"
    )


class FleetSettings(_Strict):
    """`environments.<env>.fleet`: many databases of one environment (one per tenant) in one job."""

    tenants: list[str] = Field(default_factory=list)
    database_name: str = Field(
        default="{project}_{environment}_{tenant}", description="pattern of each tenant's database name"
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="tenants initialized at once")
    executor: Literal["multiprocess", "in_process", "celery", "k8s", "ecs"] = "multiprocess"
    tenants_per_step: int = Field(
        default=1, ge=1, le=1000, description="tenants one step initializes in turn (fewer processes)"
    )


class EnvironmentSettings(_Strict):
    connection_string_env: str | None = None
    hosting: Hosting | None = None
    require_approval: bool = False
    if_exists: IfExists = "reuse"
    database_name: str | None = None
    rebuild: RebuildSchedule | None = None
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    azure: AzureSettings | None = None
    templates: TemplateSettings | None = None
    fleet: FleetSettings | None = None

    @field_validator("connection_string_env")
    @classmethod
    def _env_var_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_VAR.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an environment variable name; give the NAME of the variable "
                "that holds the URL, never the URL itself"
            )
        return value


class PackageSettings(_Strict):
    paths: list[str] = Field(default_factory=list)
    entry_points: bool = True
    transaction: TransactionMode = "auto"


class CoreSettings(_Strict):
    # false: no core schema (users, sessions, ... workspaces) is applied or expected, so a
    # history that owns tables of those names applies unchanged.
    enabled: bool = True
    # PostgreSQL: the schema (namespace) the core's tables and version table live in; default the
    # connection's current schema (public), beside the packages' tables.
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        return check_core_schema(value)


class SafetySettings(_Strict):
    protected_environments: list[str] = Field(default_factory=lambda: ["production"])
    approvers: dict[str, list[str]] = Field(default_factory=dict)
    approval_ttl: str = "24h"
    lock_timeout: float = Field(default=60.0, ge=0)
    # Seconds one migration statement may run (PostgreSQL statement_timeout, MariaDB
    # max_statement_time); 0 turns the bound off.
    statement_timeout: float = Field(default=1800.0, ge=0, le=86400 * 7)


class NotifierSettings(_Strict):
    webhook_url_env: str | None = None
    sns_topic_arn: str | None = None
    sns_region: str | None = None
    sns_endpoint_url: str | None = None


class IntegrationSettings(_Strict):
    operation_log: str = ".dbinit/operations.jsonl"
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)


class HealthSettings(_Strict):
    latency_degraded_ms: float = Field(default=100.0, gt=0)
    latency_unhealthy_ms: float = Field(default=500.0, gt=0)


class ProjectConfig(_Strict):
    project: str = Field(min_length=1, max_length=40)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    environments: dict[str, EnvironmentSettings]
    packages: PackageSettings = Field(default_factory=PackageSettings)
    core: CoreSettings = Field(default_factory=CoreSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    integration: IntegrationSettings = Field(default_factory=IntegrationSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    templates: TemplateSettings = Field(default_factory=TemplateSettings)

    @field_validator("environments")
    @classmethod
    def _env_names(cls, value: dict[str, EnvironmentSettings]) -> dict[str, EnvironmentSettings]:
        if not value:
            raise ValueError("configure at least one environment")
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"environment name {name!r} must start with a lowercase letter and use only "
                    "lowercase letters, digits and underscores (it becomes the job name initialize_<env>)"
                )
        return value

    @model_validator(mode="after")
    def _core_schema_rules(self) -> ProjectConfig:
        refuse_core_schema_on(self.database.provider, self.core.schema_)
        return self

    @model_validator(mode="after")
    def _protected_rules(self) -> ProjectConfig:
        for name in self.safety.protected_environments:
            env = self.environments.get(name)
            if env is None:
                continue
            if env.if_exists == "recreate":
                raise ValueError(f"environments.{name}.if_exists: {recreate_refused(name)}")
            if env.rebuild is not None:
                raise ValueError(
                    f"environments.{name}.rebuild: rebuild schedules are refused for the protected "
                    f"environment {name!r}"
                )
        return self


class LoadedConfig:
    """A validated configuration and the file it came from (relative paths resolve against it)."""

    def __init__(self, model: ProjectConfig, path: Path) -> None:
        self.model = model
        self.path = path
        self.root = path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the configuration, made absolute against the configuration's folder."""
        candidate = Path(relative).expanduser()
        return candidate if candidate.is_absolute() else (self.root / candidate).resolve()

    @property
    def state_dir(self) -> Path:
        return self.root / ".dbinit"

    def environment(self, name: str) -> EnvironmentSettings:
        env = self.model.environments.get(name)
        if env is None:
            known = ", ".join(sorted(self.model.environments)) or "none"
            raise ConfigurationError(
                f"Unknown environment {name!r}: {self.path} configures {known}",
                code=ErrorCode.UNKNOWN_ENVIRONMENT,
                suggestions=[
                    f"Use one of: {known}.",
                    f"Or add environments.{name} to {self.path}.",
                ],
            )
        return env

    def hosting(self, name: str) -> str:
        env = self.environment(name)
        hosting = env.hosting or self.model.database.hosting
        return "local" if hosting == "localhost" else hosting

    @property
    def statement_timeout_s(self) -> float | None:
        value = self.model.safety.statement_timeout
        return value or None

    def is_protected(self, name: str) -> bool:
        return name in self.model.safety.protected_environments

    def needs_approval(self, name: str) -> bool:
        return self.is_protected(name) or self.environment(name).require_approval


def find_config_path() -> Path:
    """Where the configuration is: $DBINIT_CONFIG, else $DBINIT_CWD/dbinit.yaml, else ./dbinit.yaml."""
    explicit = os.environ.get("DBINIT_CONFIG")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("DBINIT_CWD")
    return (Path(base).expanduser() if base else Path.cwd()).resolve() / "dbinit.yaml"


def recreate_refused(environment: str) -> str:
    """The rule, worded once: dbinit never drops the database of a protected environment."""
    return f"'recreate' is refused for the protected environment {environment!r} (it would drop a protected database)"


def refuse_recreate(environment: str, *, protected: bool, if_exists: str) -> None:
    """The rule, decided once (validate checks the plan, create checks it again before it drops)."""
    if if_exists == "recreate" and protected:
        raise InputError(
            f"if_exists {recreate_refused(environment)}",
            code=ErrorCode.RECREATE_REFUSED,
            suggestions=["Use reuse (the default) or error; drop a protected database by hand if you must."],
        )


def validation_problems(exc: ValidationError) -> list[str]:
    """pydantic's errors as `key.path: message` lines, the way every file dbinit reads reports them."""
    problems = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(f"{_format_location(tuple(err['loc']))}: {message}")
    return problems


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def load_config(path: Path | None = None) -> LoadedConfig:
    """Read and validate the configuration; every problem names the key and the file."""
    path = (path or find_config_path()).resolve()
    if not path.is_file():
        raise ConfigurationError(
            f"Configuration not found: {path}",
            code=ErrorCode.CONFIGURATION_MISSING,
            suggestions=[
                "Create dbinit.yaml in the project folder (see the README), or",
                "point DBINIT_CONFIG at the file, or DBINIT_CWD at the folder that holds it.",
            ],
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"{path} is not valid YAML: {exc}",
            suggestions=[f"Fix the YAML syntax in {path}."],
        ) from None
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"{path} must hold a mapping with at least `project` and `environments`",
            suggestions=["Start from the dbinit.yaml in the repository."],
        )
    try:
        model = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigurationError(
            f"Invalid configuration in {path}: " + "; ".join(problems),
            details={"problems": problems, "file": str(path)},
            suggestions=[f"Fix the key(s) named above in {path}."],
        ) from None
    return LoadedConfig(model, path)


@lru_cache(maxsize=16)
def _load_version(path: str, mtime_ns: int) -> LoadedConfig:
    return load_config(Path(path))


def load_cached(path: str) -> LoadedConfig:
    """The configuration at `path`, read once per process and file version."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _load_version(path, mtime)
