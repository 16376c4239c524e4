"""Google Cloud SQL (`gcp-sql`) and Azure Database flexible servers (`azure-sql`): the shared contract.

The same promises as the AWS hostings: find by name or create what is missing (never modify or
delete what exists), wait with backoff under one deadline that names the last state, classify
every error as transient or permanent with what to do, keep the generated password in the
cloud's secret store and read it only when a connection is made. `gcp.py` and `azure.py` hold
the cloud-specific calls; their client libraries are optional extras, loaded only for their
hosting, and a missing extra is an error naming the `pip install` that fixes it.
"""

from __future__ import annotations

import importlib
import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from sqlalchemy.engine import URL

from dbinit_pipeline.configuration import LoadedConfig
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
from dbinit_pipeline.redaction import register_secret

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)

GCP_HOSTING = "gcp-sql"
AZURE_HOSTING = "azure-sql"
ENVIRONMENT_LABEL = "dbinit-environment"  # a valid GCP label key and Azure tag name alike
BACKOFF_FACTOR = 1.5
MAX_POLL_INTERVAL_S = 60.0
GIB = 1024**3
DEGRADED_FREE_FRACTION = 0.10
PASSWORD_LENGTH = 32
# URL-safe symbols: the password survives any URL or shell quoting a user may put it through.
_PASSWORD_SYMBOLS = "-_.~"

# hosting -> (module, the extra that installs its client libraries)
_MODULES = {
    GCP_HOSTING: ("dbinit_pipeline.infrastructure.gcp", "gcp"),
    AZURE_HOSTING: ("dbinit_pipeline.infrastructure.azure", "azure"),
}
_EXTRA_PACKAGES = ("google", "googleapiclient", "httplib2", "azure", "msal")
_SECRET_KINDS = {"gcp-secret": GCP_HOSTING, "azure-secret": AZURE_HOSTING}

T = TypeVar("T")
# How a run came by its server, as the responses say it.
Infrastructure = Literal["embedded", "existing", "provisioned", "would_provision"]


class CloudModule(Protocol):
    """What `gcp.py` and `azure.py` provide."""

    def ensure_infrastructure(
        self, config: LoadedConfig, environment: str, *, dry_run: bool
    ) -> CloudInfrastructure: ...

    def disk_space(self, config: LoadedConfig, environment: str) -> dict[str, Any]: ...

    def read_secret(self, where: str) -> tuple[str, str]: ...

    def identity(self, config: LoadedConfig, environment: str) -> str: ...


def cloud_module(hosting: str) -> CloudModule:
    """The module of `hosting`; a clear error naming the extra when its libraries are missing."""
    name, extra = _MODULES[hosting]
    try:
        module: ModuleType = importlib.import_module(name)
    except ImportError as exc:
        if not (exc.name or "").startswith(_EXTRA_PACKAGES):
            raise  # an import of dbinit's own failed: a bug, not a missing extra
        raise ConfigurationError(
            f"hosting {hosting!r} needs client libraries that are not installed ({exc.name or exc})",
            code=ErrorCode.MISSING_EXTRA,
            suggestions=[f"pip install 'dbinit_pipeline[{extra}]'"],
        ) from None
    return cast(CloudModule, module)


def ensure_cloud_infrastructure(
    config: LoadedConfig, environment: str, hosting: str, *, dry_run: bool
) -> CloudInfrastructure:
    """Find the environment's instance or server, create what is missing, wait until it is ready."""
    return cloud_module(hosting).ensure_infrastructure(config, environment, dry_run=dry_run)


def cloud_disk_space(config: LoadedConfig, environment: str, hosting: str) -> dict[str, Any]:
    """Free disk from the cloud's monitoring API, or `unknown` with the reason; never raises."""
    try:
        module = cloud_module(hosting)
    except DbinitError as exc:
        return {"status": "unknown", "free_bytes": None, "reason": exc.message}
    return module.disk_space(config, environment)


def cloud_identity(config: LoadedConfig, environment: str, hosting: str) -> str:
    """`<hosting>:<where>/<name>`: the server an approval's plan names, without calling the cloud."""
    return f"{hosting}:" + cloud_module(hosting).identity(config, environment)


def resolve_cloud_secret(kind: str, where: str) -> tuple[str, str]:
    """(username, password) from a `gcp-secret:` or `azure-secret:` secret source."""
    username, password = cloud_module(_SECRET_KINDS[kind]).read_secret(where)
    register_secret(password)
    return username, password


# --- passwords ----------------------------------------------------------------------------------


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password with upper and lower case letters, digits and a symbol (Azure requires
    three of the four classes); registered for redaction before anyone can print it."""
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, _PASSWORD_SYMBOLS)
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    password = "".join(chars)
    register_secret(password)
    return password


def secret_payload(username: str, password: str) -> str:
    """What dbinit stores: a JSON object, like the secrets RDS manages."""
    return json.dumps({"username": username, "password": password})


def parse_secret_payload(text: str, *, default_username: str, name: str) -> tuple[str, str]:
    """(username, password) from a secret dbinit wrote (JSON) or one holding only the password."""
    text = text.strip()
    if not text:
        raise ProvisioningError(
            f"The secret {name} is empty",
            code=ErrorCode.CLOUD_SECRET_MALFORMED,
            suggestions=[
                "Store the administrator password in it, or a JSON object with username and password."
            ],
        )
    if text.startswith("{"):
        try:
            value = json.loads(text)
            password = str(value["password"])
            username = str(value.get("username") or default_username)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProvisioningError(
                f"The secret {name} holds JSON without a password",
                code=ErrorCode.CLOUD_SECRET_MALFORMED,
                suggestions=['Store {"username": ..., "password": ...} or only the password in it.'],
            ) from None
    else:
        username, password = default_username, text
    register_secret(password)
    return username, password


# --- waiting and retrying -----------------------------------------------------------------------


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


@dataclass
class Poll:
    """How one wait went: the state of each look, for the deadline's error."""

    what: str
    states: list[str] = field(default_factory=list)

    @property
    def last(self) -> str:
        return self.states[-1] if self.states else "unknown"


def poll_until(
    read_state: Callable[[], str | None],
    *,
    ready: Callable[[str], bool],
    what: str,
    interval: float,
    deadline: Deadline,
    dead_ends: Mapping[str, str],
    on_deadline: Callable[[Poll], DbinitError],
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Look at `read_state` with growing pauses until `ready` says so or the deadline passes.

    A state in `dead_ends` (one the cloud will not leave by itself) fails at once with its advice;
    None means the thing vanished.
    """
    poll = Poll(what)
    first = interval
    while True:
        state = read_state()
        if state is None:
            raise ProvisioningError(
                f"{what} disappeared while waiting for it",
                code=ErrorCode.INFRASTRUCTURE_VANISHED,
                details={"polls": len(poll.states) + 1},
                suggestions=["Someone deleted it: rerun to create it again, or find out who did."],
            )
        poll.states.append(state)
        if ready(state):
            return state
        if state in dead_ends:
            raise ProvisioningError(
                f"{what} is in state {state!r} and will not become ready by itself",
                code=ErrorCode.INFRASTRUCTURE_UNUSABLE,
                details={"last_state": state},
                suggestions=[dead_ends[state]],
            )
        remaining = deadline.remaining()
        if remaining <= 0:
            raise on_deadline(poll)
        log.info("%s is %s; next look in %.1fs", what, state, min(interval, remaining))
        sleep(min(interval, remaining))
        interval = min(interval * BACKOFF_FACTOR, max(MAX_POLL_INTERVAL_S, first))


def with_retries(
    call: Callable[[], T],
    *,
    attempts: int,
    interval: float,
    deadline: Deadline | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, again after a pause while it raises a transient DbinitError, `attempts` calls at most.

    Pauses grow from `interval`; none runs past the deadline.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except DbinitError as exc:
            remaining = deadline.remaining() if deadline else interval
            if not exc.transient or attempt == attempts or remaining <= 0:
                raise
            log.info("%s; call %d of %d again in %.2fs", exc.message, attempt + 1, attempts, interval)
            sleep(min(interval, remaining))
            interval = min(interval * 2, MAX_POLL_INTERVAL_S)
    raise AssertionError("unreachable: the last attempt returns or raises")


def deadline_error(
    poll: Poll, *, seconds: float, deadline: Deadline, config_key: str, first_advice: str, look: str
) -> ProvisioningError:
    """The error of a wait that ran out of time: the thing, its last state, what to do."""
    return ProvisioningError(
        f"{poll.what} is not ready after {seconds:g}s: its last state was {poll.last!r}",
        code=ErrorCode.PROVISIONING_TIMEOUT,
        details={
            "last_state": poll.last,
            "waited_s": round(deadline.elapsed(), 1),
            "polls": len(poll.states),
        },
        suggestions=[
            first_advice,
            f"Creating a database server often takes 5 to 20 minutes: raise {config_key}.wait_timeout "
            "(seconds) if it regularly takes longer.",
            look,
        ],
    )


# --- what was found ------------------------------------------------------------------------------


class FoundInfrastructure:
    """What every cloud hosting (AWS, Google Cloud, Azure) reports once it looked for its server:
    whether it existed, was created or would be, and a display-only server before it exists."""

    identifier: str
    created: tuple[str, ...]
    would_create: tuple[str, ...]

    @property
    def login(self) -> str | None:
        """The user the server's URL names."""
        raise NotImplementedError

    @property
    def infrastructure(self) -> Infrastructure:
        """`would_provision` (dry run, something missing), `provisioned` or `existing`."""
        if self.would_create:
            return "would_provision"
        return "provisioned" if self.created else "existing"

    def with_changes(self, details: dict[str, Any]) -> dict[str, Any]:
        """`details` plus what was created, or would be in a dry run."""
        if self.created:
            details["created"] = list(self.created)
        if self.would_create:
            details["would_create"] = list(self.would_create)
        return details

    def placeholder_ref(self, provider: str) -> ServerRef:
        """A display-only server for a dry run in which the infrastructure does not exist yet."""
        maintenance = provider_for(provider).maintenance_database
        # .invalid is reserved (RFC 2606): this host can never be reached by accident.
        url = URL.create(
            provider,
            username=self.login,
            host=f"{self.identifier}.endpoint-pending.invalid",
            database=maintenance,
        )
        return ServerRef(provider, url.render_as_string(hide_password=True), "none", maintenance)


@dataclass(frozen=True)
class CloudInfrastructure(FoundInfrastructure):
    """What was found or created, and how to reach it; never a password."""

    hosting: str
    identifier: str
    location: str
    status: str
    created: tuple[str, ...] = ()
    would_create: tuple[str, ...] = ()
    endpoint: str | None = None
    port: int | None = None
    username: str | None = None
    secret_source: str | None = None  # "gcp-secret:..." / "azure-secret:..." when a password is kept
    secret_name: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    protection: str | None = None  # deletion protection (GCP) or the resource lock (Azure)
    network_advice: str = ""
    missing_secret_advice: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def login(self) -> str | None:
        return self.username

    def details(self) -> dict[str, Any]:
        """What the provision stage reports: identifier, endpoint, what was created."""
        details: dict[str, Any] = {
            "hosting": self.hosting,
            "identifier": self.identifier,
            "location": self.location,
            "status": self.status,
            "endpoint": f"{self.endpoint}:{self.port}" if self.endpoint else None,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "protection": self.protection,
            "password_secret": self.secret_name,
            **self.extra,
        }
        return self.with_changes(details)

    def server_ref(self, provider: str, connection_env: str | None = None) -> ServerRef:
        """The server at the instance's address; the password is read from its secret when used."""
        maintenance = provider_for(provider).maintenance_database
        if not self.endpoint:
            raise ProvisioningError(
                f"{self.identifier} has no address yet (state {self.status!r})",
                code=ErrorCode.ENDPOINT_MISSING,
                suggestions=["Rerun when it is ready.", self.network_advice],
            )
        if not self.secret_source:
            var = connection_env or "the environment's connection variable"
            raise ConfigurationError(
                f"dbinit keeps no password for {self.identifier} (it did not create it), and {var} is "
                "not set: dbinit has no credentials for it",
                code=ErrorCode.MISSING_CONNECTION_VARIABLE,
                suggestions=[
                    f"Set {var} to a URL with credentials for {self.endpoint}:{self.port}.",
                    self.missing_secret_advice,
                ],
            )
        url = URL.create(
            provider,
            username=self.username,
            host=self.endpoint,
            port=self.port or provider_for(provider).default_port,
            database=maintenance,
        )
        return ServerRef(provider, url.render_as_string(hide_password=True), self.secret_source, maintenance)


def endpoint_error(exc: BaseException, infra: CloudInfrastructure, *, via: str) -> DbinitError:
    """The error for a ready instance that does not answer (or refuses) at its address."""
    if isinstance(exc, DbinitError):
        exc.details = {**infra.details(), "connection": via, **exc.details}
        return exc
    error = classify(exc, during=f"connecting to {infra.identifier} ({via})")
    suggestions = list(error.suggestions)
    if not isinstance(error, (AuthenticationFailure, PermissionDenied)) and infra.endpoint:
        suggestions = [
            infra.network_advice,
            "Or set the environment's connection variable to a URL through a tunnel or proxy that "
            "reaches it (when set, it is used instead of the address).",
            *suggestions,
        ]
    return type(error)(
        error.message,
        code=error.code,
        transient=error.transient,
        suggestions=suggestions,
        details={**error.details, **infra.details(), "connection": via},
    )


def disk_result(
    *, free: int | None, total: int | None, source: str, reason: str = "", **extra: Any
) -> dict[str, Any]:
    """A health check's disk entry: healthy, degraded below a tenth free, or unknown with the reason."""
    result: dict[str, Any] = {"status": "unknown", "free_bytes": None, "source": source, **extra}
    if free is None or not total:
        result["reason"] = reason or "the monitoring API returned no datapoint"
        return result
    low = free < DEGRADED_FREE_FRACTION * total
    result.update(
        free_bytes=free,
        allocated_bytes=total,
        free_percent=round(100 * free / total, 1),
        status="degraded" if low else "healthy",
        reason=f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB, "
        f"{'below' if low else 'above'} {DEGRADED_FREE_FRACTION:.0%}",
    )
    return result
