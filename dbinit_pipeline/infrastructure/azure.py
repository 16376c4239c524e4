"""Azure hosting (`azure-sql`): the Azure Database for PostgreSQL or MySQL flexible server of an environment.

Through Azure's management libraries (azure-mgmt-postgresqlflexibleservers or
azure-mgmt-mysqlflexibleservers, azure-mgmt-resource-locks, azure-mgmt-monitor) and Key Vault's
(azure-keyvault-secrets), authenticated by azure-identity's DefaultAzureCredential chain
(environment variables, workload or managed identity, `az login`). Waiting is on the SDK's own
pollers, under the same deadline as every other wait. Every azure-core error becomes one of the
project's errors here, transient or not, with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.mysqlflexibleservers import MySQLManagementClient
from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient
from azure.mgmt.resource.locks import ManagementLockClient
from azure.mgmt.resource.locks.models import ManagementLockObject

from dbinit_pipeline.configuration import AzureSettings, LoadedConfig
from dbinit_pipeline.errors import ConfigurationError, DbinitError, ErrorCode, ProvisioningError
from dbinit_pipeline.infrastructure.cloud import (
    AZURE_HOSTING,
    ENVIRONMENT_LABEL,
    GIB,
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

if TYPE_CHECKING:
    from collections.abc import Callable

    from azure.core.credentials import TokenCredential
    from azure.core.polling import LROPoller

log = logging.getLogger(__name__)

SECRET_SOURCE_KIND = "azure-secret"
READY = "Ready"
LOCK_NAME = "dbinit-protected"
_ENGINES = {
    "postgresql": ("Microsoft.DBforPostgreSQL", "16", 5432),
    "mysql": ("Microsoft.DBforMySQL", "8.0.21", 3306),
}
# Flexible server names: 3 to 63 lowercase letters, digits and hyphens, not starting or ending with one.
_SERVER = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_DEAD_ENDS = {
    "Disabled": "Azure disabled it (a subscription or billing problem): resolve that in the portal, then rerun.",
    "Dropping": "It is being deleted: wait until it is gone and rerun to create it again, or choose another "
    "azure.server.",
}
_TRANSIENT_CODES = frozenset(
    {
        "TooManyRequests",
        "SubscriptionRequestsThrottled",
        "ResourceGroupRequestsThrottled",
        "Throttled",
        "ServerBusy",
        "ServiceUnavailable",
        "InternalServerError",
        "RetryableError",
        "GatewayTimeout",
        "OperationTimedOut",
    }
)
_ACCESS_CODES = frozenset({"AuthorizationFailed", "LinkedAuthorizationFailed", "Forbidden", "AccessDenied"})


# --- errors -------------------------------------------------------------------------------------


def _error_code(exc: HttpResponseError) -> tuple[str, str]:
    """(code, message) of an ARM or Key Vault error body."""
    code = getattr(exc.error, "code", None) if exc.error else None
    message = getattr(exc.error, "message", None) if exc.error else None
    if not code and exc.response is not None:
        try:
            error = json.loads(exc.response.text()).get("error", {})
            code, message = error.get("code"), error.get("message")
        except (ValueError, AttributeError, TypeError):
            pass
    return str(code or exc.reason or ""), str(message or exc.message or "")


def azure_error(exc: BaseException, *, doing: str, config_key: str) -> DbinitError:
    """Turn an azure-core or azure-identity exception raised while `doing` into a project error."""
    if isinstance(exc, DbinitError):
        return exc
    if isinstance(exc, CredentialUnavailableError):
        return ProvisioningError(
            f"No usable Azure credentials while {doing}: {exc.message}",
            code=ErrorCode.AZURE_CREDENTIALS_MISSING,
            suggestions=[
                "Give this process Azure credentials: AZURE_TENANT_ID, AZURE_CLIENT_ID and "
                "AZURE_CLIENT_SECRET (a service principal), a managed or workload identity, or `az login`.",
            ],
        )
    if isinstance(exc, ClientAuthenticationError):
        return ProvisioningError(
            f"Azure refused the credentials while {doing}: {exc.message}",
            code=ErrorCode.AZURE_CREDENTIALS_INVALID,
            suggestions=[
                "The credentials in use are unknown, expired or mistyped: refresh them and rerun.",
                "See which identity is in use: az account show",
            ],
        )
    if isinstance(exc, HttpResponseError):
        return _http_error(exc, doing=doing, config_key=config_key)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError)):
        return ProvisioningError(
            f"Azure did not answer while {doing}: {exc}",
            code=ErrorCode.AZURE_UNREACHABLE,
            transient=True,
            suggestions=[
                "Check network access from this machine to Azure (proxy, firewall).",
                f"Check {config_key}.endpoint_url, authority_host and key_vault_url.",
            ],
        )
    if isinstance(exc, AzureError):
        return ProvisioningError(
            f"Azure client error while {doing}: {exc}",
            code=ErrorCode.AZURE_ERROR,
            suggestions=[f"Read the error above; check {config_key} and the Azure credentials in use."],
        )
    return ProvisioningError(
        f"Unexpected {type(exc).__name__} while {doing}: {exc}",
        code=ErrorCode.AZURE_ERROR,
        suggestions=["This is likely a bug in dbinit_pipeline: rerun with --verbose and report it."],
    )


def _http_error(exc: HttpResponseError, *, doing: str, config_key: str) -> DbinitError:
    status = int(exc.status_code or 0)
    code, message = _error_code(exc)
    text = f"Azure refused a request while {doing}: HTTP {status} {code}: {message}"
    details = {"azure_error_code": code, "http_status": status}
    if status == 429 or status >= 500 or code in _TRANSIENT_CODES:
        return ProvisioningError(
            text,
            code=ErrorCode.AZURE_THROTTLED
            if status == 429 or "Throttl" in code
            else ErrorCode.AZURE_UNAVAILABLE,
            transient=True,
            details=details,
            suggestions=[
                "Azure is throttling or briefly unavailable: dbinit retries with backoff.",
                "If it persists, other tools may be calling Azure Resource Manager with the same identity: "
                "spread them out.",
            ],
        )
    if "quota" in code.lower() or "quota" in message.lower():
        return ProvisioningError(
            text,
            code=ErrorCode.AZURE_QUOTA_EXCEEDED,
            details=details,
            suggestions=[
                "An Azure quota is reached (vCores of this SKU family or servers in this region).",
                "Request more in the portal (Subscriptions > Usage + quotas), delete unused servers, "
                f"or choose another {config_key}.location or sku_name.",
            ],
        )
    if status == 401:
        return ProvisioningError(
            text,
            code=ErrorCode.AZURE_CREDENTIALS_INVALID,
            details=details,
            suggestions=["The credentials in use are unknown or expired: refresh them (az login) and rerun."],
        )
    if status == 403 or code in _ACCESS_CODES:
        return ProvisioningError(
            text,
            code=ErrorCode.AZURE_ACCESS_DENIED,
            details=details,
            suggestions=[
                "Grant the identity in use what dbinit needs: Contributor on the resource group (servers), "
                "User Access Administrator or Owner to place the delete lock on a protected environment, "
                "Key Vault Secrets Officer on the vault, Monitoring Reader for disk space.",
                "See which identity is in use: az account show",
            ],
        )
    return ProvisioningError(
        text,
        code=ErrorCode.AZURE_INVALID_REQUEST,
        details=details,
        suggestions=[
            f"Azure refused the settings: fix the value named above under {config_key} (subscription_id, "
            "resource_group, location, version, sku_name, sku_tier, storage_gb, key_vault_url) and rerun.",
            "List what a region offers: az postgres flexible-server list-skus --location LOCATION "
            "(or az mysql flexible-server list-skus).",
        ],
    )


# --- what to find or create ---------------------------------------------------------------------


@dataclass(frozen=True)
class AzureTarget:
    """The flexible server one environment asks for, with every default decided."""

    environment: str
    provider: str
    subscription_id: str
    resource_group: str
    server: str
    version: str
    secret_name: str
    protected: bool
    settings: AzureSettings

    @property
    def config_key(self) -> str:
        return f"environments.{self.environment}.azure"

    @property
    def namespace(self) -> str:
        return _ENGINES[self.provider][0]

    @property
    def kind(self) -> str:
        return "PostgreSQL" if self.provider == "postgresql" else "MySQL"

    @property
    def what(self) -> str:
        return f"Azure Database for {self.kind} flexible server {self.server}"

    def tags(self) -> dict[str, str]:
        return {**self.settings.tags, ENVIRONMENT_LABEL: self.environment}


def azure_target(config: LoadedConfig, environment: str, *, strict: bool = True) -> AzureTarget:
    """The environment's Azure settings with defaults applied; bad or missing values name their key."""
    env = config.environment(environment)
    settings = env.azure or AzureSettings()
    key = f"environments.{environment}.azure"
    provider = config.model.database.provider
    subscription = settings.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID") or ""
    if strict and not subscription:
        raise ConfigurationError(
            f"{key}.subscription_id is not set, nor is AZURE_SUBSCRIPTION_ID ({config.path})",
            suggestions=[f"Set {key}.subscription_id (az account show --query id)."],
        )
    if strict and not settings.resource_group:
        raise ConfigurationError(
            f"{key}.resource_group is not set ({config.path})",
            suggestions=[
                f"Set {key}.resource_group to the resource group that holds (or will hold) the server."
            ],
        )
    folded = re.sub(r"[^a-z0-9]+", "-", f"{config.model.project}-{environment}".lower()).strip("-")
    server = settings.server or folded[:63].rstrip("-")
    if not _SERVER.match(server):
        raise ConfigurationError(
            f"{key}.server {server!r} is not a valid flexible server name ({config.path})",
            suggestions=[
                "Use 3 to 63 lowercase letters, digits and hyphens, not starting or ending with a hyphen."
            ],
        )
    return AzureTarget(
        environment=environment,
        provider=provider,
        subscription_id=subscription,
        resource_group=settings.resource_group or "",
        server=server,
        version=settings.version or _ENGINES[provider][1],
        secret_name=settings.password_secret or f"{server}-admin",
        protected=config.is_protected(environment),
        settings=settings,
    )


def identity(config: LoadedConfig, environment: str) -> str:
    target = azure_target(config, environment, strict=False)
    return f"{target.subscription_id or 'default'}/{target.resource_group}/{target.server}"


# --- clients ------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def credential(authority_host: str | None) -> TokenCredential:
    """DefaultAzureCredential, once per process and authority (it caches its tokens)."""
    if authority_host:
        # An authority the configuration names (a sovereign or private cloud) is one Microsoft's
        # instance discovery does not list: it is taken as given.
        return DefaultAzureCredential(authority=authority_host, disable_instance_discovery=True)
    return DefaultAzureCredential()


class AzureApis:
    """The management clients of one target; throttling is retried by `call`, not by azure-core."""

    def __init__(self, target: AzureTarget) -> None:
        self.target = target
        settings = target.settings
        self.credential = credential(settings.authority_host)
        common: dict[str, Any] = {"retry_total": 0}
        if settings.endpoint_url:
            common["base_url"] = settings.endpoint_url
        client = PostgreSQLManagementClient if target.provider == "postgresql" else MySQLManagementClient
        self.servers: Any = client(self.credential, target.subscription_id, **common).servers
        self._common = common

    def locks(self) -> Any:
        return ManagementLockClient(
            self.credential, self.target.subscription_id, **self._common
        ).management_locks

    def metrics(self) -> Any:
        return MonitorManagementClient(self.credential, self.target.subscription_id, **self._common).metrics

    def vault(self) -> SecretClient:
        return key_vault(self.target, self.credential)

    def call(self, do: Callable[[], Any], doing: str, *, deadline: Deadline | None = None) -> Any:
        """`do()`; throttling and network faults are retried (max_attempts calls in all)."""
        key = self.target.config_key

        def once() -> Any:
            try:
                return do()
            except (AzureError, OSError) as exc:
                raise azure_error(exc, doing=doing, config_key=key) from None

        settings = self.target.settings
        return with_retries(
            once, attempts=settings.max_attempts, interval=settings.poll_interval, deadline=deadline
        )

    def call_or_none(self, do: Callable[[], Any], doing: str, *, deadline: Deadline | None = None) -> Any:
        """Like `call`, but None when the thing asked for does not exist (HTTP 404)."""

        def found_or_none() -> Any:
            try:
                return do()
            except ResourceNotFoundError:
                return None

        return self.call(found_or_none, doing, deadline=deadline)


def key_vault(target: AzureTarget, cred: TokenCredential) -> SecretClient:
    vault = target.settings.key_vault_url
    if not vault:
        raise ConfigurationError(
            f"{target.config_key}.key_vault_url is not set: dbinit keeps the administrator password in Key Vault",
            suggestions=[f"Set {target.config_key}.key_vault_url to https://<vault>.vault.azure.net."],
        )
    return SecretClient(vault, cred, retry_total=0)


def _raw(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    """`cls=` hook of the generated clients: the response's JSON, in the REST API's own shape."""
    return pipeline_response.http_response.json()


# --- the server ---------------------------------------------------------------------------------


def find_server(
    apis: AzureApis, target: AzureTarget, deadline: Deadline | None = None
) -> dict[str, Any] | None:
    found: dict[str, Any] | None = apis.call_or_none(
        lambda: apis.servers.get(target.resource_group, target.server, cls=_raw),
        f"looking for {target.what}",
        deadline=deadline,
    )
    return found


def server_body(target: AzureTarget, password: str) -> dict[str, Any]:
    """The create request in the REST API's shape (both SDKs accept it)."""
    settings = target.settings
    return {
        "location": settings.location,
        "tags": target.tags(),
        "sku": {"name": settings.sku_name, "tier": settings.sku_tier},
        "properties": {
            "administratorLogin": settings.administrator_login,
            "administratorLoginPassword": password,
            "version": target.version,
            "createMode": "Default",
            "storage": {
                "storageSizeGB": settings.storage_gb,
                "autoGrow": "Enabled" if settings.storage_auto_grow else "Disabled",
            },
        },
    }


def _begin_create(apis: AzureApis, target: AzureTarget, body: dict[str, Any]) -> LROPoller[Any]:
    interval = target.settings.poll_interval
    if target.provider == "postgresql":
        poller: LROPoller[Any] = apis.servers.begin_create_or_update(
            target.resource_group, target.server, body, polling_interval=interval
        )
    else:
        poller = apis.servers.begin_create(
            target.resource_group, target.server, body, polling_interval=interval
        )
    return poller


def create_server(apis: AzureApis, target: AzureTarget, deadline: Deadline) -> list[str]:
    """Keep a new password in Key Vault, create the server with it, wait on the SDK's poller."""
    created: list[str] = []
    password, secret_created = ensure_secret_password(apis, target)
    if secret_created:
        created.append(f"Key Vault secret {target.secret_name}")
    poller = apis.call(
        lambda: _begin_create(apis, target, server_body(target, password)),
        f"creating {target.what}",
        deadline=deadline,
    )
    log.info("creating %s", target.what)
    key = target.config_key

    def wait(seconds: float) -> None:
        try:
            poller.wait(seconds)  # returns early when done; raises what the poller's thread met
        except (AzureError, OSError) as exc:
            raise azure_error(exc, doing=f"waiting for {target.what} to be created", config_key=key) from None

    def status() -> str:
        wait(0)
        return "Succeeded" if poller.done() else poller.status()

    poll_until(
        status,
        ready=lambda s: s == "Succeeded",
        what=f"creation of {target.what}",
        interval=target.settings.poll_interval,
        deadline=deadline,
        dead_ends={},
        on_deadline=lambda poll: _deadline(poll, target, deadline),
        sleep=wait,
    )
    return [*created, target.what]


def _deadline(poll: Poll, target: AzureTarget, deadline: Deadline) -> ProvisioningError:
    cli = "postgres" if target.provider == "postgresql" else "mysql"
    if poll.last == "Stopped":
        first = (
            f"It is stopped; dbinit does not start existing infrastructure. Start it: az {cli} flexible-server "
            f"start --resource-group {target.resource_group} --name {target.server}, then rerun."
        )
    else:
        first = (
            f"Azure is still working on it ({poll.last}): rerun later; the run finds it and reuses it, "
            "creating nothing twice."
        )
    error = deadline_error(
        poll,
        seconds=target.settings.wait_timeout,
        deadline=deadline,
        config_key=target.config_key,
        first_advice=first,
        look=f"See what Azure says: az monitor activity-log list --resource-group {target.resource_group}",
    )
    error.details["identifier"] = target.server
    return error


def wait_until_ready(apis: AzureApis, target: AzureTarget, deadline: Deadline) -> dict[str, Any]:
    latest: dict[str, dict[str, Any] | None] = {}

    def state() -> str | None:
        latest["server"] = find_server(apis, target, deadline)
        found = latest["server"]
        return str(found.get("properties", {}).get("state", "Unknown")) if found else None

    poll_until(
        state,
        ready=lambda s: s == READY,
        what=target.what,
        interval=target.settings.poll_interval,
        deadline=deadline,
        dead_ends=_DEAD_ENDS,
        on_deadline=lambda poll: _deadline(poll, target, deadline),
    )
    server = latest["server"]
    assert server is not None  # poll_until returned Ready
    return server


def _check_server(server: dict[str, Any], target: AzureTarget) -> None:
    owner = (server.get("tags") or {}).get(ENVIRONMENT_LABEL)
    if owner is not None and owner != target.environment:
        raise ConfigurationError(
            f"{target.what} belongs to environment {owner!r} (tag {ENVIRONMENT_LABEL}), not {target.environment!r}",
            code=ErrorCode.INFRASTRUCTURE_OWNED_ELSEWHERE,
            suggestions=[f"Give environment {target.environment!r} its own {target.config_key}.server."],
        )


# --- the password and the lock ------------------------------------------------------------------


def ensure_secret_password(apis: AzureApis, target: AzureTarget) -> tuple[str, bool]:
    """(password, created): the secret's current value, or a new password stored before use."""
    vault = apis.vault()
    name = target.secret_name
    found = apis.call_or_none(lambda: vault.get_secret(name), f"reading Key Vault secret {name}")
    if found is not None and found.value:
        login = target.settings.administrator_login
        return parse_secret_payload(found.value, default_username=login, name=name)[1], False
    password = generate_password()
    payload = secret_payload(target.settings.administrator_login, password)
    apis.call(
        lambda: vault.set_secret(name, payload, content_type="application/json", tags=target.tags()),
        f"storing the administrator password in Key Vault secret {name}",
    )
    return password, True


def ensure_lock(apis: AzureApis, target: AzureTarget) -> bool:
    """A CanNotDelete lock on the server of a protected environment; True when this call placed it."""
    locks = apis.locks()
    where = (target.resource_group, target.namespace, "", "flexibleServers", target.server, LOCK_NAME)
    if apis.call_or_none(
        lambda: locks.get_at_resource_level(*where), f"looking for the lock on {target.what}"
    ):
        return False
    lock = ManagementLockObject(
        level="CanNotDelete",
        notes=f"dbinit: environment {target.environment} is protected; remove this lock to delete the server.",
    )
    apis.call(
        lambda: locks.create_or_update_at_resource_level(*where, lock),
        f"locking {target.what} against deletion",
    )
    return True


# --- the whole of it ----------------------------------------------------------------------------


def secret_source(target: AzureTarget) -> str:
    """`azure-secret:<vault url>|<secret name>|<default login>|<authority host>`."""
    settings = target.settings
    return (
        f"{SECRET_SOURCE_KIND}:{settings.key_vault_url}|{target.secret_name}|"
        f"{settings.administrator_login}|{settings.authority_host or ''}"
    )


def ensure_infrastructure(config: LoadedConfig, environment: str, *, dry_run: bool) -> CloudInfrastructure:
    """Find the environment's flexible server, create what is missing, wait until Ready.

    In a dry run nothing is created: what is missing is reported in `would_create`.
    """
    target = azure_target(config, environment)
    apis = AzureApis(target)
    deadline = Deadline(target.settings.wait_timeout)
    created: list[str] = []
    server = find_server(apis, target)
    if server is None:
        if dry_run:
            would = [target.what, f"Key Vault secret {target.secret_name}"]
            if target.protected:
                would.append(f"delete lock {LOCK_NAME}")
            return _planned(target, would)
        created += create_server(apis, target, deadline)
    else:
        _check_server(server, target)
    server = wait_until_ready(apis, target, deadline)
    _check_server(server, target)
    owned = (server.get("tags") or {}).get(ENVIRONMENT_LABEL) == environment
    lock = None
    # The lock goes only on a server this environment's dbinit created; anyone else's is never touched.
    if target.protected and owned:
        if dry_run:
            lock = f"would add delete lock {LOCK_NAME}"
        else:
            if ensure_lock(apis, target):
                created.append(f"delete lock {LOCK_NAME}")
            lock = f"delete lock {LOCK_NAME}"
    properties = server.get("properties", {})
    keeps_secret = bool(target.settings.key_vault_url) and (
        owned or target.settings.password_secret is not None
    )
    return CloudInfrastructure(
        AZURE_HOSTING,
        target.server,
        f"{target.resource_group}/{server.get('location', target.settings.location)}",
        str(properties.get("state")),
        created=tuple(created),
        endpoint=properties.get("fullyQualifiedDomainName"),
        port=_ENGINES[target.provider][2],
        username=properties.get("administratorLogin") or target.settings.administrator_login,
        secret_source=secret_source(target) if keeps_secret else None,
        secret_name=target.secret_name if keeps_secret else None,
        engine=f"{target.kind} flexible server",
        engine_version=properties.get("version"),
        protection=lock or "no lock",
        network_advice=(
            "Check that this machine reaches the server: add a firewall rule for its address "
            f"(az {'postgres' if target.provider == 'postgresql' else 'mysql'} flexible-server firewall-rule "
            f"create --resource-group {target.resource_group} --name {target.server} ...), or run inside "
            "its virtual network (private access)."
        ),
        missing_secret_advice=(
            f"Or name a Key Vault secret holding its administrator password in {target.config_key}.password_secret "
            f"(with {target.config_key}.key_vault_url)."
        ),
        extra={"resource_id": server.get("id"), "sku": (server.get("sku") or {}).get("name")},
    )


def _planned(target: AzureTarget, would: list[str]) -> CloudInfrastructure:
    return CloudInfrastructure(
        AZURE_HOSTING,
        target.server,
        f"{target.resource_group}/{target.settings.location}",
        "missing",
        would_create=tuple(would),
        username=target.settings.administrator_login,
        engine=f"{target.kind} flexible server",
        engine_version=target.version,
        protection=f"delete lock {LOCK_NAME}" if target.protected else "no lock",
    )


@lru_cache(maxsize=8)
def _secret_client(vault_url: str, authority_host: str | None) -> SecretClient:
    """One client per vault and process: every connect reads the secret, not the challenge and token."""
    return SecretClient(vault_url, credential(authority_host), retry_total=0)


def read_secret(where: str) -> tuple[str, str]:
    """(username, password) from `<vault url>|<secret name>|<default login>|<authority host>`."""
    vault_url, name, login, authority = [*where.split("|"), "", "", ""][:4]
    client = _secret_client(vault_url, authority or None)
    try:
        value = client.get_secret(name).value or ""
    except ResourceNotFoundError:
        raise ProvisioningError(
            f"The Key Vault secret {name} in {vault_url} does not exist",
            code=ErrorCode.CLOUD_SECRET_MISSING,
            suggestions=[
                f"Store the administrator password in it: az keyvault secret set --vault-name VAULT --name {name} ...",
                "Or set the environment's connection variable to a URL with credentials.",
            ],
        ) from None
    except (AzureError, OSError) as exc:
        raise azure_error(
            exc, doing=f"reading Key Vault secret {name}", config_key="environments.<env>.azure"
        ) from None
    return parse_secret_payload(value, default_username=login, name=name)


# --- disk space ---------------------------------------------------------------------------------


def disk_space(config: LoadedConfig, environment: str) -> dict[str, Any]:
    """Free storage: the server's storage size minus Azure Monitor's `storage_used`; never raises."""
    source = "azure-monitor"
    try:
        target = azure_target(config, environment)
        apis = AzureApis(target)
        server = find_server(apis, target)
        if server is None:
            return disk_result(free=None, total=None, source=source, reason=f"{target.what} does not exist")
        size_gb = server.get("properties", {}).get("storage", {}).get("storageSizeGB")
        now = datetime.now(UTC)
        timespan = f"{(now - timedelta(hours=1)).isoformat()}/{now.isoformat()}"
        resource = str(server.get("id", "")).lstrip("/")
        answer = apis.call(
            lambda: apis.metrics().list(
                resource,
                timespan=timespan,
                interval="PT1M",
                metricnames="storage_used",
                aggregation="Maximum",
                cls=_raw,
            ),
            f"reading storage_used of {target.what} from Azure Monitor",
        )
    except DbinitError as exc:
        return disk_result(free=None, total=None, source=source, reason=exc.message)
    except Exception as exc:  # a health check reports what it could not measure; it never fails
        return disk_result(free=None, total=None, source=source, reason=f"{type(exc).__name__}: {exc}")
    points = [
        p
        for metric in answer.get("value", [])
        for series in metric.get("timeseries", [])
        for p in series.get("data", [])
        if p.get("maximum") is not None
    ]
    if not points or not size_gb:
        reason = (
            f"Azure Monitor has no storage_used point for {target.server} in the last hour"
            if not points
            else f"{target.what} reports no storage size"
        )
        return disk_result(free=None, total=None, source=source, reason=reason, metric="storage_used")
    newest = max(points, key=lambda p: str(p.get("timeStamp", "")))
    total = int(size_gb) * GIB
    return disk_result(
        free=total - int(newest["maximum"]),
        total=total,
        source=source,
        metric="storage_used",
        identifier=target.server,
        measured_at=newest.get("timeStamp"),
    )
