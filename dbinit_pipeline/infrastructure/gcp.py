"""Google Cloud hosting (`gcp-sql`): the Cloud SQL instance of an environment.

Through Google's discovery client (google-api-python-client) and the REST APIs it describes:
Cloud SQL Admin v1 (instances, operations, users), Secret Manager v1 (the administrator's
password) and Cloud Monitoring v3 (free disk). Credentials come from Application Default
Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the attached service account).
Every HttpError becomes one of the project's errors here, transient or not, with what to do.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import google.auth
import google_auth_httplib2
import httplib2
from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from dbinit_pipeline.configuration import GcpSettings, LoadedConfig
from dbinit_pipeline.errors import ConfigurationError, DbinitError, ErrorCode, ProvisioningError
from dbinit_pipeline.infrastructure.cloud import (
    ENVIRONMENT_LABEL,
    GCP_HOSTING,
    CloudInfrastructure,
    Deadline,
    Poll,
    deadline_error,
    disk_result,
    generate_password,
    parse_secret_payload,
    poll_until,
    secret_payload,
    with_retries,
)

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
SECRET_SOURCE_KIND = "gcp-secret"
RUNNABLE = "RUNNABLE"
STOPPED = "STOPPED"  # not an API state: RUNNABLE with activationPolicy NEVER, as gcloud shows it
HTTP_TIMEOUT_S = 30
_DEFAULT_VERSIONS = {"postgresql": "POSTGRES_16", "mysql": "MYSQL_8_0"}
_VERSION_PREFIX = {"postgresql": "POSTGRES_", "mysql": "MYSQL_"}
_PORTS = {"postgresql": 5432, "mysql": 3306}
# Cloud SQL instance ids: a lowercase letter first, then lowercase letters, digits and hyphens.
_INSTANCE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_INSTANCE_MAX = 84
_DEAD_ENDS = {
    "FAILED": "Cloud SQL could not create it: read `gcloud sql operations list --instance INSTANCE`, "
    "delete it and rerun.",
    "SUSPENDED": "Google suspended it (billing or a policy): resolve that in the console, then rerun.",
    "PENDING_DELETE": "It is being deleted: choose another gcp.instance (Cloud SQL keeps a deleted "
    "name for up to a week).",
}
_TRANSIENT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
)
_QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded", "limitExceeded"})


# --- errors -------------------------------------------------------------------------------------


def _error_body(exc: HttpError) -> tuple[str, str, str]:
    """(status name, reason, message) of a Google JSON error body."""
    try:
        error = json.loads(exc.content.decode("utf-8", "replace")).get("error", {})
    except (ValueError, AttributeError):
        return "", "", str(exc)
    reasons = [e.get("reason", "") for e in error.get("errors", []) if isinstance(e, dict)]
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reasons.append(str(detail["reason"]))
    return str(error.get("status", "")), next((r for r in reasons if r), ""), str(error.get("message", ""))


def gcp_error(exc: BaseException, *, doing: str, config_key: str) -> DbinitError:
    """Turn an exception of Google's client raised while `doing` into a project error."""
    if isinstance(exc, DbinitError):
        return exc
    if isinstance(exc, HttpError):
        return _http_error(exc, doing=doing, config_key=config_key)
    if isinstance(exc, DefaultCredentialsError):
        return ProvisioningError(
            f"No usable Google credentials while {doing}: {exc}",
            code=ErrorCode.GCP_CREDENTIALS_MISSING,
            suggestions=[
                "Give this process Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS "
                "(a service account key file), `gcloud auth application-default login`, or an "
                "attached service account.",
            ],
        )
    if isinstance(exc, RefreshError):
        return ProvisioningError(
            f"Google refused the credentials while {doing}: {exc}",
            code=ErrorCode.GCP_CREDENTIALS_INVALID,
            transient=bool(getattr(exc, "retryable", False)),
            suggestions=[
                "The credentials in use are unknown, disabled or expired: refresh them "
                "(gcloud auth application-default login, a new key) and rerun.",
                "See which identity is in use: gcloud auth list",
            ],
        )
    if isinstance(exc, (TransportError, httplib2.HttpLib2Error, OSError)):
        # Connection refused, DNS, timeouts: the network may come back.
        return ProvisioningError(
            f"Google Cloud did not answer while {doing}: {type(exc).__name__}: {exc}",
            code=ErrorCode.GCP_UNREACHABLE,
            transient=True,
            suggestions=[
                "Check network access from this machine to Google's APIs (proxy, firewall).",
                f"Check {config_key}.endpoint_url (and secret_manager_endpoint_url, monitoring_endpoint_url).",
            ],
        )
    return ProvisioningError(
        f"Unexpected {type(exc).__name__} while {doing}: {exc}",
        code=ErrorCode.GCP_ERROR,
        suggestions=["This is likely a bug in dbinit_pipeline: rerun with --verbose and report it."],
    )


def _http_error(exc: HttpError, *, doing: str, config_key: str) -> DbinitError:
    http_status = int(exc.resp.status)
    status, reason, message = _error_body(exc)
    text = f"Google Cloud refused a request while {doing}: HTTP {http_status} {status or reason}: {message}"
    details = {"gcp_status": status, "gcp_reason": reason, "http_status": http_status}
    if http_status == 429 or http_status >= 500 or reason in _TRANSIENT_REASONS:
        return ProvisioningError(
            text,
            code=ErrorCode.GCP_THROTTLED
            if http_status == 429 or "Rate" in reason
            else ErrorCode.GCP_UNAVAILABLE,
            transient=True,
            details=details,
            suggestions=[
                "Google Cloud is throttling or briefly unavailable: dbinit retries with backoff.",
                "If it persists, other tools may be calling the same API: spread them out, or request "
                "a higher quota for the API's requests per minute.",
            ],
        )
    if reason in _QUOTA_REASONS or "quota" in message.lower():
        return ProvisioningError(
            text,
            code=ErrorCode.GCP_QUOTA_EXCEEDED,
            details=details,
            suggestions=[
                "A Google Cloud quota is reached (Cloud SQL instances, CPUs or disk in this region).",
                "Delete unused instances, or request more on the console's Quotas page "
                "(service: Cloud SQL Admin API).",
                f"Or choose another region in {config_key}.region.",
            ],
        )
    if http_status == 401:
        return ProvisioningError(
            text,
            code=ErrorCode.GCP_CREDENTIALS_INVALID,
            details=details,
            suggestions=[
                "The credentials in use are unknown or expired: refresh them "
                "(gcloud auth application-default login) and rerun.",
            ],
        )
    if http_status == 403:
        return ProvisioningError(
            text,
            code=ErrorCode.GCP_ACCESS_DENIED,
            details=details,
            suggestions=[
                "Grant the identity in use the roles it needs on the project: roles/cloudsql.admin, "
                "roles/secretmanager.admin (or secretAccessor to only read a secret you name) and "
                "roles/monitoring.viewer.",
                "If the message says an API is disabled, enable it: gcloud services enable "
                "sqladmin.googleapis.com secretmanager.googleapis.com monitoring.googleapis.com",
                "See which identity is in use: gcloud auth list",
            ],
        )
    return ProvisioningError(
        text,
        code=ErrorCode.GCP_INVALID_REQUEST,
        details=details,
        suggestions=[
            f"Google Cloud refused the settings: fix the value named above under {config_key} "
            "(database_version, tier, edition, region, disk_size_gb, private_network, "
            "authorized_networks, labels) and rerun.",
            "List the tiers a project may use: gcloud sql tiers list",
        ],
    )


# --- what to find or create ---------------------------------------------------------------------


@dataclass(frozen=True)
class GcpTarget:
    """The instance one environment asks for, with every default decided."""

    environment: str
    provider: str
    project: str
    instance: str
    database_version: str
    secret_id: str
    secret_named: bool
    protected: bool
    settings: GcpSettings

    @property
    def config_key(self) -> str:
        return f"environments.{self.environment}.gcp"

    @property
    def secret_name(self) -> str:
        return f"projects/{self.project}/secrets/{self.secret_id}"

    @property
    def what(self) -> str:
        return f"Cloud SQL instance {self.instance}"

    def labels(self) -> dict[str, str]:
        return {**self.settings.labels, ENVIRONMENT_LABEL: self.environment}


def default_instance(project: str, environment: str) -> str:
    folded = re.sub(r"[^a-z0-9]+", "-", f"{project}-{environment}".lower()).strip("-")
    if not folded[:1].isalpha():
        folded = f"db-{folded}"
    return folded[:_INSTANCE_MAX].rstrip("-")


def gcp_target(config: LoadedConfig, environment: str, *, strict: bool = True) -> GcpTarget:
    """The environment's Cloud SQL settings with defaults applied; bad values name their key."""
    env = config.environment(environment)
    settings = env.gcp or GcpSettings()
    key = f"environments.{environment}.gcp"
    provider = config.model.database.provider
    project = settings.project
    if not project:
        if strict:
            # Never guessed from the credentials: the project decides where instances are created.
            raise ConfigurationError(
                f"{key}.project is not set ({config.path})",
                suggestions=[
                    f"Set {key}.project to the id of the Google Cloud project that holds the instance."
                ],
            )
        project = "default"
    instance = settings.instance or default_instance(config.model.project, environment)
    if len(instance) > _INSTANCE_MAX or not _INSTANCE.match(instance):
        raise ConfigurationError(
            f"{key}.instance {instance!r} is not a valid Cloud SQL instance id ({config.path})",
            suggestions=[
                f"Use 1 to {_INSTANCE_MAX} lowercase letters, digits and hyphens, starting with a letter "
                "and not ending with a hyphen."
            ],
        )
    version = settings.database_version or _DEFAULT_VERSIONS[provider]
    if not version.startswith(_VERSION_PREFIX[provider]):
        raise ConfigurationError(
            f"{key}.database_version {version!r} does not fit database.provider {provider!r} ({config.path})",
            suggestions=[
                f"Use a {_VERSION_PREFIX[provider]}* version (default {_DEFAULT_VERSIONS[provider]}), "
                f"or leave {key}.database_version unset."
            ],
        )
    return GcpTarget(
        environment=environment,
        provider=provider,
        project=project,
        instance=instance,
        database_version=version,
        secret_id=settings.password_secret or f"{instance}-dbinit-admin",
        secret_named=settings.password_secret is not None,
        protected=config.is_protected(environment),
        settings=settings,
    )


def identity(config: LoadedConfig, environment: str) -> str:
    target = gcp_target(config, environment, strict=False)
    return f"{target.project}/{target.settings.region}/{target.instance}"


# --- clients ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def application_default_credentials(key_file: str | None) -> Any:
    """ADC, once per process and key file: its token is reused until it expires, not fetched per connect."""
    credentials, _ = google.auth.default(scopes=SCOPES)
    return credentials


class GcpApis:
    """Discovery clients for Cloud SQL Admin, Secret Manager and Monitoring on one authorized HTTP."""

    def __init__(self, target: GcpTarget) -> None:
        self.target = target
        key = target.config_key
        try:
            credentials = application_default_credentials(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
        except DefaultCredentialsError as exc:
            raise gcp_error(exc, doing="loading Google credentials", config_key=key) from None
        self._http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(timeout=HTTP_TIMEOUT_S)
        )
        settings = target.settings
        self.sql = self._build("sqladmin", "v1", settings.endpoint_url)
        self.secrets = self._build("secretmanager", "v1", settings.secret_manager_endpoint_url)
        self._monitoring_endpoint = settings.monitoring_endpoint_url

    def _build(self, name: str, version: str, endpoint: str | None) -> Any:
        options = {"api_endpoint": endpoint} if endpoint else None
        # static_discovery: the API description ships inside the library; nothing is fetched.
        return discovery.build(
            name,
            version,
            http=self._http,
            client_options=options,
            static_discovery=True,
            cache_discovery=False,
        )

    def monitoring(self) -> Any:
        return self._build("monitoring", "v3", self._monitoring_endpoint)

    def call(self, request: Any, doing: str, *, deadline: Deadline | None = None) -> Any:
        """Execute `request`; throttling and network faults are retried (max_attempts calls in all)."""
        key = self.target.config_key

        def once() -> Any:
            try:
                return request.execute(num_retries=0)
            except (
                TimeoutError,
                HttpError,
                RefreshError,
                TransportError,
                httplib2.HttpLib2Error,
                OSError,
            ) as exc:
                raise gcp_error(exc, doing=doing, config_key=key) from None

        settings = self.target.settings
        return with_retries(
            once, attempts=settings.max_attempts, interval=settings.poll_interval, deadline=deadline
        )

    def call_or_none(self, request: Any, doing: str, *, deadline: Deadline | None = None) -> Any:
        """Like `call`, but None when the thing asked for does not exist (HTTP 404)."""
        try:
            return self.call(request, doing, deadline=deadline)
        except ProvisioningError as exc:
            if exc.details.get("http_status") == 404:
                return None
            raise


# --- the instance -------------------------------------------------------------------------------


def find_instance(apis: GcpApis, target: GcpTarget) -> dict[str, Any] | None:
    """The instance, or None when the project has none by that name."""
    request = apis.sql.instances().get(project=target.project, instance=target.instance)
    found: dict[str, Any] | None = apis.call_or_none(request, f"looking for {target.what}")
    return found


def effective_state(instance: dict[str, Any]) -> str:
    state = str(instance.get("state", "SQL_INSTANCE_STATE_UNSPECIFIED"))
    if state == RUNNABLE and instance.get("settings", {}).get("activationPolicy") == "NEVER":
        return STOPPED
    return state


def insert_body(target: GcpTarget) -> dict[str, Any]:
    settings = target.settings
    ip: dict[str, Any] = {
        "ipv4Enabled": settings.private_network is None or bool(settings.authorized_networks)
    }
    if settings.private_network:
        ip["privateNetwork"] = settings.private_network
    if settings.authorized_networks:
        ip["authorizedNetworks"] = [
            {"kind": "sql#aclEntry", "name": f"dbinit-{i}", "value": cidr}
            for i, cidr in enumerate(settings.authorized_networks, 1)
        ]
    return {
        "name": target.instance,
        "project": target.project,
        "region": settings.region,
        "databaseVersion": target.database_version,
        "settings": {
            "tier": settings.tier,
            "edition": settings.edition,
            "dataDiskSizeGb": str(settings.disk_size_gb),
            "storageAutoResize": settings.disk_autoresize,
            "storageAutoResizeLimit": str(settings.disk_autoresize_limit_gb),
            "userLabels": target.labels(),
            "deletionProtectionEnabled": target.protected,
            "ipConfiguration": ip,
        },
    }


def create_instance(apis: GcpApis, target: GcpTarget, deadline: Deadline) -> bool:
    """Create the instance and wait for its operation; False when it appeared meanwhile."""
    request = apis.sql.instances().insert(project=target.project, body=insert_body(target))
    try:
        operation = apis.call(request, f"creating {target.what}", deadline=deadline)
    except ProvisioningError as exc:
        if exc.details.get("http_status") == 409 and find_instance(apis, target) is not None:
            return False  # created between our look and our insert: found, then
        raise
    log.info("creating %s (operation %s)", target.what, operation.get("name"))
    wait_for_operation(apis, target, operation, deadline)
    return True


def wait_for_operation(
    apis: GcpApis, target: GcpTarget, operation: dict[str, Any], deadline: Deadline
) -> None:
    """Poll the long-running operation until DONE; its error, if any, is raised classified."""
    name = str(operation.get("name"))
    kind = str(operation.get("operationType", "operation")).lower()
    what = f"Cloud SQL {kind} operation {name} on {target.instance}"
    latest = {"operation": operation}

    def state() -> str | None:
        request = apis.sql.operations().get(project=target.project, operation=name)
        latest["operation"] = apis.call(request, f"reading {what}", deadline=deadline)
        return str(latest["operation"].get("status", "STATUS_UNSPECIFIED"))

    poll_until(
        state,
        ready=lambda s: s == "DONE",
        what=what,
        interval=target.settings.poll_interval,
        deadline=deadline,
        dead_ends={},
        on_deadline=lambda poll: _deadline(poll, target, deadline),
    )
    errors = latest["operation"].get("error", {}).get("errors", [])
    if errors:
        codes = ", ".join(str(e.get("code")) for e in errors)
        message = "; ".join(str(e.get("message")) for e in errors)
        quota = "QUOTA" in codes.upper()
        raise ProvisioningError(
            f"{what} failed: {codes}: {message}",
            code=ErrorCode.GCP_QUOTA_EXCEEDED if quota else ErrorCode.GCP_OPERATION_FAILED,
            details={"operation": name, "gcp_codes": codes},
            suggestions=[
                "A Google Cloud quota is reached: free some or request more on the Quotas page."
                if quota
                else f"Fix what the message names under {target.config_key} and rerun.",
                f"See the operation: gcloud sql operations describe {name} --project {target.project}",
            ],
        )


def _deadline(poll: Poll, target: GcpTarget, deadline: Deadline) -> ProvisioningError:
    if poll.last == STOPPED:
        first = (
            f"It is stopped; dbinit does not start existing infrastructure. Start it: gcloud sql instances "
            f"patch {target.instance} --activation-policy=ALWAYS --project {target.project}, then rerun."
        )
    else:
        first = (
            f"Google is still working on it ({poll.last}): rerun later; the run finds it and reuses it, "
            "creating nothing twice."
        )
    error = deadline_error(
        poll,
        seconds=target.settings.wait_timeout,
        deadline=deadline,
        config_key=target.config_key,
        first_advice=first,
        look=f"See what Google says: gcloud sql operations list --instance {target.instance} "
        f"--project {target.project}",
    )
    error.details["identifier"] = target.instance
    return error


def wait_until_runnable(apis: GcpApis, target: GcpTarget, deadline: Deadline) -> dict[str, Any]:
    latest: dict[str, dict[str, Any] | None] = {}

    def state() -> str | None:
        latest["instance"] = apis.call_or_none(
            apis.sql.instances().get(project=target.project, instance=target.instance),
            f"looking at {target.what}",
            deadline=deadline,
        )
        found = latest["instance"]
        return effective_state(found) if found else None

    dead_ends = {k: v.replace("INSTANCE", target.instance) for k, v in _DEAD_ENDS.items()}
    poll_until(
        state,
        ready=lambda s: s == RUNNABLE,
        what=target.what,
        interval=target.settings.poll_interval,
        deadline=deadline,
        dead_ends=dead_ends,
        on_deadline=lambda poll: _deadline(poll, target, deadline),
    )
    instance = latest["instance"]
    assert instance is not None  # poll_until returned RUNNABLE
    return instance


def _check_instance(instance: dict[str, Any], target: GcpTarget) -> None:
    """Refuse an instance of another environment, or of the other engine."""
    owner = instance.get("settings", {}).get("userLabels", {}).get(ENVIRONMENT_LABEL)
    if owner is not None and owner != target.environment:
        raise ConfigurationError(
            f"{target.what} belongs to environment {owner!r} (label {ENVIRONMENT_LABEL}), "
            f"not {target.environment!r}",
            code=ErrorCode.INFRASTRUCTURE_OWNED_ELSEWHERE,
            suggestions=[f"Give environment {target.environment!r} its own {target.config_key}.instance."],
        )
    version = str(instance.get("databaseVersion", ""))
    if not version.startswith(_VERSION_PREFIX[target.provider]):
        raise ConfigurationError(
            f"{target.what} runs {version!r}, but database.provider is {target.provider!r}",
            code=ErrorCode.INFRASTRUCTURE_ENGINE_MISMATCH,
            suggestions=[f"Point {target.config_key}.instance at an instance of the right engine."],
        )


def _address(instance: dict[str, Any], target: GcpTarget) -> str | None:
    addresses = {a.get("type"): a.get("ipAddress") for a in instance.get("ipAddresses", [])}
    order = ("PRIVATE", "PRIMARY") if target.settings.private_network else ("PRIMARY", "PRIVATE")
    return next((addresses[t] for t in order if addresses.get(t)), None)


# --- the administrator and its secret -----------------------------------------------------------


def _secret_exists(apis: GcpApis, target: GcpTarget) -> bool:
    request = apis.secrets.projects().secrets().get(name=target.secret_name)
    return apis.call_or_none(request, f"looking for secret {target.secret_name}") is not None


def _user_exists(apis: GcpApis, target: GcpTarget) -> bool:
    request = apis.sql.users().list(project=target.project, instance=target.instance)
    users = apis.call(request, f"listing the users of {target.what}").get("items", [])
    return any(u.get("name") == target.settings.admin_user for u in users)


def ensure_secret_password(apis: GcpApis, target: GcpTarget) -> tuple[str, bool]:
    """(password, created): the latest version of the secret, or a new one stored before use."""
    name = target.secret_name
    latest = apis.call_or_none(
        apis.secrets.projects().secrets().versions().access(name=f"{name}/versions/latest"),
        f"reading secret {name}",
    )
    if latest is not None:
        raw = base64.b64decode(latest.get("payload", {}).get("data", "")).decode("utf-8")
        return parse_secret_payload(raw, default_username=target.settings.admin_user, name=name)[1], False
    created = False
    if not _secret_exists(apis, target):
        body = {"replication": {"automatic": {}}, "labels": target.labels()}
        request = (
            apis.secrets.projects()
            .secrets()
            .create(parent=f"projects/{target.project}", secretId=target.secret_id, body=body)
        )
        apis.call(request, f"creating secret {name}")
        created = True
    password = generate_password()
    data = base64.b64encode(secret_payload(target.settings.admin_user, password).encode()).decode()
    apis.call(
        apis.secrets.projects().secrets().addVersion(parent=name, body={"payload": {"data": data}}),
        f"storing the password in secret {name}",
    )
    return password, created


def create_admin_user(apis: GcpApis, target: GcpTarget, deadline: Deadline) -> list[str]:
    """Store a new password in Secret Manager, then create the user with it; what was created."""
    password, secret_created = ensure_secret_password(apis, target)
    created = [f"Secret Manager secret {target.secret_id}"] if secret_created else []
    request = apis.sql.users().insert(
        project=target.project,
        instance=target.instance,
        body={"name": target.settings.admin_user, "password": password},
    )
    operation = apis.call(
        request, f"creating user {target.settings.admin_user} on {target.what}", deadline=deadline
    )
    wait_for_operation(apis, target, operation, deadline)
    return [*created, f"user {target.settings.admin_user}"]


# --- the whole of it ----------------------------------------------------------------------------


def secret_source(target: GcpTarget) -> str:
    """`gcp-secret:<secret name>|<default user>|<Secret Manager endpoint>`."""
    endpoint = target.settings.secret_manager_endpoint_url or ""
    return f"{SECRET_SOURCE_KIND}:{target.secret_name}|{target.settings.admin_user}|{endpoint}"


def ensure_infrastructure(config: LoadedConfig, environment: str, *, dry_run: bool) -> CloudInfrastructure:
    """Find the environment's Cloud SQL instance, create what is missing, wait until RUNNABLE.

    In a dry run nothing is created: what is missing is reported in `would_create`.
    """
    target = gcp_target(config, environment)
    apis = GcpApis(target)
    deadline = Deadline(target.settings.wait_timeout)
    admin = target.settings.admin_user
    created: list[str] = []
    instance = find_instance(apis, target)
    if instance is None:
        if dry_run:
            return _planned(
                target, [target.what, f"user {admin}", f"Secret Manager secret {target.secret_id}"]
            )
        if create_instance(apis, target, deadline):
            created.append(target.what)
    else:
        _check_instance(instance, target)
    instance = wait_until_runnable(apis, target, deadline)
    _check_instance(instance, target)
    owned = instance.get("settings", {}).get("userLabels", {}).get(ENVIRONMENT_LABEL) == environment
    # The administrator is created only on an instance this environment's dbinit created: an
    # earlier run that stopped after the instance is finished; anyone else's instance is never touched.
    if owned and not _user_exists(apis, target):
        if dry_run:
            return _planned(target, [f"user {admin}"], state=effective_state(instance))
        created += create_admin_user(apis, target, deadline)
    keeps_secret = target.secret_named or (owned and _secret_exists(apis, target))
    settings = instance.get("settings", {})
    return CloudInfrastructure(
        GCP_HOSTING,
        target.instance,
        f"{target.project}/{instance.get('region', target.settings.region)}",
        effective_state(instance),
        created=tuple(created),
        endpoint=_address(instance, target),
        port=_PORTS[target.provider],
        username=admin,
        secret_source=secret_source(target) if keeps_secret else None,
        secret_name=target.secret_name if keeps_secret else None,
        engine=str(instance.get("databaseVersion")),
        protection="deletion protection"
        if settings.get("deletionProtectionEnabled")
        else "no deletion protection",
        network_advice=(
            "Check that this machine reaches the instance: add its public address to "
            f"{target.config_key}.authorized_networks when creating, or to the instance's authorized "
            "networks (gcloud sql instances patch --authorized-networks), or run inside its VPC "
            "(private IP); the Cloud SQL Auth Proxy is another way in."
        ),
        missing_secret_advice=(
            f"Or name a Secret Manager secret holding its password in {target.config_key}.password_secret "
            f"(user {admin}, or a JSON object with username and password)."
        ),
        extra={"connection_name": instance.get("connectionName"), "tier": settings.get("tier")},
    )


def _planned(target: GcpTarget, would: list[str], *, state: str = "missing") -> CloudInfrastructure:
    return CloudInfrastructure(
        GCP_HOSTING,
        target.instance,
        f"{target.project}/{target.settings.region}",
        state,
        would_create=tuple(would),
        username=target.settings.admin_user,
        engine=target.database_version,
        protection="deletion protection" if target.protected else "no deletion protection",
    )


def read_secret(where: str) -> tuple[str, str]:
    """(username, password) from `<secret name>|<default user>|<endpoint>`."""
    name, _, rest = where.partition("|")
    default_user, _, endpoint = rest.partition("|")
    match = re.match(r"^projects/([^/]+)/secrets/([^/]+)$", name)
    if not match:
        raise ConfigurationError(
            f"{name!r} is not a Secret Manager secret name",
            code=ErrorCode.INVALID_SECRET_SOURCE,
            suggestions=["This is likely a bug in dbinit_pipeline: report it."],
        )
    target = GcpTarget(
        environment="<env>",
        provider="postgresql",
        project=match[1],
        instance="",
        database_version="",
        secret_id=match[2],
        secret_named=True,
        protected=False,
        settings=GcpSettings(secret_manager_endpoint_url=endpoint or None, admin_user=default_user),
    )
    apis = GcpApis(target)
    found = apis.call_or_none(
        apis.secrets.projects().secrets().versions().access(name=f"{name}/versions/latest"),
        f"reading secret {name}",
    )
    if found is None:
        raise ProvisioningError(
            f"The secret {name} does not exist or has no enabled version",
            code=ErrorCode.CLOUD_SECRET_MISSING,
            suggestions=[
                "Store the password in it: gcloud secrets versions add SECRET --data-file=-",
                "Or set the environment's connection variable to a URL with credentials.",
            ],
        )
    raw = base64.b64decode(found.get("payload", {}).get("data", "")).decode("utf-8")
    return parse_secret_payload(raw, default_username=default_user, name=name)


# --- disk space ---------------------------------------------------------------------------------


def _latest_point(apis: GcpApis, target: GcpTarget, metric: str) -> tuple[int, str] | None:
    now = datetime.now(UTC)
    request = (
        apis.monitoring()
        .projects()
        .timeSeries()
        .list(
            name=f"projects/{target.project}",
            filter=f'metric.type = "cloudsql.googleapis.com/database/{metric}" AND '
            f'resource.labels.database_id = "{target.project}:{target.instance}"',
            interval_startTime=(now - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            interval_endTime=now.isoformat().replace("+00:00", "Z"),
        )
    )
    series = apis.call(request, f"reading {metric} of {target.what} from Cloud Monitoring").get(
        "timeSeries", []
    )
    points = [p for s in series for p in s.get("points", [])]
    if not points:
        return None
    newest = max(points, key=lambda p: str(p.get("interval", {}).get("endTime", "")))
    value = newest.get("value", {})
    raw = value.get("int64Value", value.get("doubleValue"))
    return (int(float(raw)), str(newest.get("interval", {}).get("endTime"))) if raw is not None else None


def disk_space(config: LoadedConfig, environment: str) -> dict[str, Any]:
    """Free disk of the instance: disk/quota minus disk/bytes_used from Cloud Monitoring; never raises."""
    source = "cloud-monitoring"
    try:
        target = gcp_target(config, environment)
        apis = GcpApis(target)
        used = _latest_point(apis, target, "disk/bytes_used")
        quota = _latest_point(apis, target, "disk/quota")
    except DbinitError as exc:
        return disk_result(free=None, total=None, source=source, reason=exc.message)
    except Exception as exc:  # a health check reports what it could not measure; it never fails
        return disk_result(free=None, total=None, source=source, reason=f"{type(exc).__name__}: {exc}")
    if used is None or quota is None:
        missing = "disk/bytes_used" if used is None else "disk/quota"
        return disk_result(
            free=None,
            total=None,
            source=source,
            reason=f"Cloud Monitoring has no {missing} point for {target.instance} in the last hour",
            metric="cloudsql.googleapis.com/database/disk",
        )
    return disk_result(
        free=quota[0] - used[0],
        total=quota[0],
        source=source,
        metric="cloudsql.googleapis.com/database/disk",
        identifier=target.instance,
        measured_at=used[1],
    )
