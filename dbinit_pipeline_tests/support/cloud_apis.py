"""Local HTTP servers that answer Google Cloud's and Azure's REST APIs for the provisioning tests.

They answer only the calls dbinit makes, with the documented JSON shapes (resources, long-running
operations, error bodies with their real codes), and record every request so that a test can
assert what was sent. The official client libraries reach them through their own transports
(httplib2 for Google's discovery client, requests under azure-core for Azure), pointed here by
their documented endpoint settings; the credentials are real ones too: a service account key
whose token_uri is this server (Google), a service principal whose authority host is this server
(Azure, over TLS with a certificate the test trusts through REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

Reply = tuple[int, Any, dict[str, str]]


def loopback_only(monkeypatch: Any) -> list[Any]:
    """Make every socket connection off loopback fail the test (a cloud library's metadata probe,
    say); returns the addresses that were refused."""
    refused: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            refused.append(address)
            raise ConnectionRefusedError(f"the tests reach loopback only, not {address}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return refused


TOKEN = "ya29.local-test-token"


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int
    headers: dict[str, str] = field(default_factory=dict)


class RestServer:
    """A JSON-over-HTTP(S) server on an ephemeral loopback port with regex routes."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = []
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                try:
                    body: Any = json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                seen = Seen(
                    self.command, parts.path, query, body, {k.lower(): v for k, v in self.headers.items()}
                )
                status, payload, headers = owner.dispatch(seen)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, pattern: str, handler: Callable[..., Reply]) -> None:
        self.routes.append((method, re.compile(pattern), handler))

    def fail(
        self, method: str, pattern: str, status: int, body: Any, *, times: int = 1, **headers: str
    ) -> None:
        """Answer the next `times` requests matching `method` and `pattern` with this error."""
        self.faults.append(Fault(method, re.compile(pattern), status, body, times, headers))

    def dispatch(self, seen: Seen) -> Reply:
        with self.lock:
            self.seen.append(seen)
            for fault in self.faults:
                if fault.times and fault.method == seen.method and fault.pattern.search(seen.path):
                    fault.times -= 1
                    return fault.status, fault.body, fault.headers
            for method, pattern, handler in self.routes:
                match = pattern.fullmatch(seen.path)
                if method == seen.method and match:
                    return handler(seen, *match.groups())
        return 404, {"error": {"code": 404, "message": f"no route for {seen.method} {seen.path}"}}, {}

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def calls(self) -> list[str]:
        """`METHOD path` of every API request, for asserting what a scenario sent."""
        return [f"{s.method} {s.path}" for s in self.seen]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


# --- Google Cloud -------------------------------------------------------------------------------


def google_error(status: int, message: str, status_name: str, reason: str) -> dict[str, Any]:
    """Google's JSON error body (the shape every googleapis.com REST API answers with)."""
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status_name,
        }
    }


@functools.cache
def _service_account_key() -> str:
    """One RSA key per test session: generating one takes a noticeable part of a second."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class GoogleCloudApi(RestServer):
    """Cloud SQL Admin v1, Secret Manager v1, Cloud Monitoring v3 and an OAuth token endpoint."""

    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project
        self.instances: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, int] = {}  # operation -> polls until DONE
        self.users: dict[str, list[str]] = {}
        self.passwords: dict[tuple[str, str], str] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.series: dict[tuple[str, str], int] = {}  # (instance, metric) -> value
        self.polls_until_done = 2
        # Called with (user, password) when users.insert arrives: a test makes the role on a real
        # server, as Cloud SQL makes it on the instance.
        self.on_user_insert: Callable[[str, str], None] | None = None
        p = r"/v1/projects/([^/]+)"
        self.route("POST", r"/token", self._token)
        self.route("GET", p + r"/instances/([^/]+)", self._get_instance)
        self.route("POST", p + r"/instances", self._insert_instance)
        self.route("GET", p + r"/operations/([^/]+)", self._get_operation)
        self.route("GET", p + r"/instances/([^/]+)/users", self._list_users)
        self.route("POST", p + r"/instances/([^/]+)/users", self._insert_user)
        self.route("GET", p + r"/secrets/([^/:]+)", self._get_secret)
        self.route("POST", p + r"/secrets", self._create_secret)
        self.route("POST", p + r"/secrets/([^/:]+):addVersion", self._add_version)
        self.route("GET", p + r"/secrets/([^/:]+)/versions/latest:access", self._access)
        self.route("GET", r"/v3/projects/([^/]+)/timeSeries", self._time_series)

    def dispatch(self, seen: Seen) -> Reply:
        if seen.path != "/token" and seen.headers.get("authorization") != f"Bearer {TOKEN}":
            return (
                401,
                google_error(
                    401,
                    "Request is missing required authentication credential.",
                    "UNAUTHENTICATED",
                    "required",
                ),
                {},
            )
        return super().dispatch(seen)

    def service_account_file(self, folder: Path) -> Path:
        """A service account key whose token_uri is this server, for GOOGLE_APPLICATION_CREDENTIALS."""
        pem = _service_account_key()
        path = folder / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project,
                    "private_key_id": "k1",
                    "private_key": pem,
                    "client_email": f"dbinit@{self.project}.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        return path

    # OAuth: the JWT-bearer grant a service account key makes.
    def _token(self, seen: Seen) -> Reply:
        form = parse_qs(seen.body if isinstance(seen.body, str) else "")
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or not form.get(
            "assertion"
        ):
            return 400, {"error": "invalid_grant", "error_description": "bad grant"}, {}
        return 200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}, {}

    def _operation(self, project: str, kind: str, instance: str) -> dict[str, Any]:
        name = str(uuid.uuid4())
        op = {
            "kind": "sql#operation",
            "name": name,
            "operationType": kind,
            "status": "PENDING",
            "targetId": instance,
            "targetProject": project,
            "insertTime": _now(),
            "selfLink": f"{self.url}/v1/projects/{project}/operations/{name}",
        }
        self.operations[name] = op
        self.pending[name] = self.polls_until_done
        return op

    def _get_instance(self, seen: Seen, project: str, instance: str) -> Reply:
        found = self.instances.get(instance)
        if found is None:
            return (
                404,
                google_error(404, "The Cloud SQL instance does not exist.", "", "instanceDoesNotExist"),
                {},
            )
        return 200, found, {}

    def _insert_instance(self, seen: Seen, project: str) -> Reply:
        body = seen.body
        name = body["name"]
        if name in self.instances:
            return (
                409,
                google_error(409, "The Cloud SQL instance already exists.", "", "instanceAlreadyExists"),
                {},
            )
        op = self._operation(project, "CREATE", name)
        self.instances[name] = {
            "kind": "sql#instance",
            "name": name,
            "project": project,
            "region": body.get("region"),
            "databaseVersion": body.get("databaseVersion"),
            "state": "PENDING_CREATE",
            "connectionName": f"{project}:{body.get('region')}:{name}",
            "settings": {**body.get("settings", {}), "activationPolicy": "ALWAYS", "kind": "sql#settings"},
            "ipAddresses": [],
            "_operation": op["name"],
        }
        return 200, op, {}

    def _get_operation(self, seen: Seen, project: str, name: str) -> Reply:
        op = self.operations.get(name)
        if op is None:
            return 404, google_error(404, "The operation does not exist.", "", "operationDoesNotExist"), {}
        if self.pending.get(name, 0) > 0:
            self.pending[name] -= 1
            op["status"] = "RUNNING"
        else:
            op["status"] = "DONE"
            op["endTime"] = _now()
            instance = self.instances.get(op["targetId"])
            if instance is not None and instance.get("_operation") == name:
                instance["state"] = "RUNNABLE"
                instance["ipAddresses"] = [{"type": "PRIMARY", "ipAddress": "127.0.0.1"}]
        return 200, op, {}

    def _list_users(self, seen: Seen, project: str, instance: str) -> Reply:
        items = [{"kind": "sql#user", "name": n, "instance": instance} for n in self.users.get(instance, [])]
        return 200, {"kind": "sql#usersList", "items": items}, {}

    def _insert_user(self, seen: Seen, project: str, instance: str) -> Reply:
        self.users.setdefault(instance, []).append(seen.body["name"])
        self.passwords[(instance, seen.body["name"])] = seen.body["password"]
        if self.on_user_insert is not None:
            self.on_user_insert(seen.body["name"], seen.body["password"])
        op = self._operation(project, "CREATE_USER", instance)
        self.pending[op["name"]] = 0
        return 200, op, {}

    def _secret(self, project: str, secret: str) -> str:
        return f"projects/{project}/secrets/{secret}"

    def _get_secret(self, seen: Seen, project: str, secret: str) -> Reply:
        found = self.secrets.get(self._secret(project, secret))
        if found is None:
            message = f"Secret [{self._secret(project, secret)}] not found or has no versions."
            return 404, google_error(404, message, "NOT_FOUND", "notFound"), {}
        return 200, {k: v for k, v in found.items() if k != "versions"}, {}

    def _create_secret(self, seen: Seen, project: str) -> Reply:
        name = self._secret(project, seen.query["secretId"])
        if name in self.secrets:
            return (
                409,
                google_error(409, f"Secret [{name}] already exists.", "ALREADY_EXISTS", "alreadyExists"),
                {},
            )
        self.secrets[name] = {"name": name, "createTime": _now(), **seen.body, "versions": []}
        return 200, {k: v for k, v in self.secrets[name].items() if k != "versions"}, {}

    def _add_version(self, seen: Seen, project: str, secret: str) -> Reply:
        found = self.secrets[self._secret(project, secret)]
        found["versions"].append(seen.body["payload"]["data"])
        number = len(found["versions"])
        return (
            200,
            {"name": f"{found['name']}/versions/{number}", "state": "ENABLED", "createTime": _now()},
            {},
        )

    def _access(self, seen: Seen, project: str, secret: str) -> Reply:
        name = self._secret(project, secret)
        found = self.secrets.get(name)
        if not found or not found["versions"]:
            message = f"Secret Version [{name}/versions/latest] not found or has no enabled versions."
            return 404, google_error(404, message, "NOT_FOUND", "notFound"), {}
        number = len(found["versions"])
        return 200, {"name": f"{name}/versions/{number}", "payload": {"data": found["versions"][-1]}}, {}

    def _time_series(self, seen: Seen, project: str) -> Reply:
        wanted = re.search(
            r'metric.type = "cloudsql.googleapis.com/database/([^"]+)"', seen.query.get("filter", "")
        )
        database = re.search(r'resource.labels.database_id = "[^:]+:([^"]+)"', seen.query.get("filter", ""))
        if not wanted or not database or (database[1], wanted[1]) not in self.series:
            return 200, {"unit": "By"}, {}  # no matching series: the documented empty answer
        value = self.series[(database[1], wanted[1])]
        series = {
            "metric": {"type": f"cloudsql.googleapis.com/database/{wanted[1]}"},
            "resource": {"type": "cloudsql_database", "labels": {"database_id": f"{project}:{database[1]}"}},
            "metricKind": "GAUGE",
            "valueType": "INT64",
            "points": [
                {"interval": {"startTime": _now(), "endTime": _now()}, "value": {"int64Value": str(value)}}
            ],
        }
        return 200, {"timeSeries": [series], "unit": "By"}, {}

    def secret_password(self, secret: str) -> str:
        data = self.secrets[self._secret(self.project, secret)]["versions"][-1]
        password: str = json.loads(base64.b64decode(data))["password"]
        return password


# --- Azure --------------------------------------------------------------------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for the Azure server's TLS (azure-core demands https)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "loopback.crt", folder / "loopback.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def arm_error(code: str, message: str) -> dict[str, Any]:
    """Azure Resource Manager's error body."""
    return {"error": {"code": code, "message": message}}


class AzureApi(RestServer):
    """Microsoft Entra (token), ARM flexible servers with async operations, locks, metrics, Key Vault."""

    TENANT = "00000000-0000-0000-0000-00000000000a"

    def __init__(self, tls: tuple[Path, Path]) -> None:
        super().__init__(tls)
        self.servers: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, dict[str, Any]] = {}
        self.storage_used: dict[str, int] = {}
        self.polls_until_done = 2
        # ARM paths are case-insensitive: the locks client spells resourcegroups in lower case.
        rg = r"/subscriptions/([^/]+)/resource[Gg]roups/([^/]+)/providers/(Microsoft\.DBfor(?:PostgreSQL|MySQL))"
        self.route("GET", r"/([^/]+)/v2\.0/\.well-known/openid-configuration", self._openid)
        self.route("POST", r"/([^/]+)/oauth2/v2\.0/token", self._token)
        self.route("GET", rg + r"/flexibleServers/([^/]+)", self._get_server)
        self.route("PUT", rg + r"/flexibleServers/([^/]+)", self._put_server)
        self.route("GET", r"/asyncOperations/([^/]+)", self._get_operation)
        self.route(
            "GET",
            rg + r"/+flexibleServers/([^/]+)/providers/Microsoft\.Authorization/locks/([^/]+)",
            self._get_lock,
        )
        self.route(
            "PUT",
            rg + r"/+flexibleServers/([^/]+)/providers/Microsoft\.Authorization/locks/([^/]+)",
            self._put_lock,
        )
        self.route("GET", r"/(.+)/providers/Microsoft\.Insights/metrics", self._metrics)
        self.route("GET", r"/secrets/([^/]+)/?", self._get_secret)
        self.route("PUT", r"/secrets/([^/]+)", self._set_secret)

    @property
    def challenge_resource(self) -> str:
        # Key Vault's client accepts a challenge whose resource is a parent domain of the vault's
        # host; for the host 127.0.0.1 that parent is 0.0.1.
        return f"https://0.0.1:{self.server.server_address[1]}"

    def dispatch(self, seen: Seen) -> Reply:
        open_paths = ("/.well-known/", "/oauth2/")
        if (
            not any(p in seen.path for p in open_paths)
            and seen.headers.get("authorization") != f"Bearer {TOKEN}"
        ):
            with self.lock:
                self.seen.append(seen)
            challenge = (
                f'Bearer authorization="{self.url}/{self.TENANT}", resource="{self.challenge_resource}"'
                if seen.path.startswith("/secrets/")
                else f'Bearer authorization_uri="{self.url}/{self.TENANT}", error="invalid_token"'
            )
            body = arm_error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
            return 401, body, {"WWW-Authenticate": challenge}
        return super().dispatch(seen)

    def _openid(self, seen: Seen, tenant: str) -> Reply:
        base = f"{self.url}/{tenant}"
        return (
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            },
            {},
        )

    def _token(self, seen: Seen, tenant: str) -> Reply:
        form = parse_qs(seen.body if isinstance(seen.body, str) else "")
        if form.get("grant_type") != ["client_credentials"] or form.get("client_secret") != ["test-secret"]:
            return (
                401,
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."},
                {},
            )
        return (
            200,
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": TOKEN},
            {},
        )

    def _get_server(self, seen: Seen, sub: str, rg: str, namespace: str, name: str) -> Reply:
        found = self.servers.get(name)
        if found is None:
            message = (
                f"The Resource '{namespace}/flexibleServers/{name}' under resource group '{rg}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            )
            return 404, arm_error("ResourceNotFound", message), {}
        return 200, found, {}

    def _put_server(self, seen: Seen, sub: str, rg: str, namespace: str, name: str) -> Reply:
        body = seen.body
        resource_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/flexibleServers/{name}"
        properties = {k: v for k, v in body["properties"].items() if k != "administratorLoginPassword"}
        suffix = "postgres" if "PostgreSQL" in namespace else "mysql"
        self.servers[name] = {
            "id": resource_id,
            "name": name,
            "type": f"{namespace}/flexibleServers",
            "location": body["location"],
            "tags": body.get("tags", {}),
            "sku": body.get("sku"),
            "properties": {**properties, "state": "Provisioning", "fullyQualifiedDomainName": None},
        }
        self.servers[name]["_password"] = body["properties"]["administratorLoginPassword"]
        op = str(uuid.uuid4())
        self.operations[op] = {
            "name": op,
            "status": "InProgress",
            "startTime": _now(),
            "_server": name,
            "_fqdn": f"{name}.{suffix}.database.azure.com",
        }
        headers = {
            "Azure-AsyncOperation": f"{self.url}/asyncOperations/{op}?api-version=x",
            "Retry-After": "0",
        }
        visible = {k: v for k, v in self.servers[name].items() if not k.startswith("_")}
        return 202, visible, headers

    def _get_operation(self, seen: Seen, op: str) -> Reply:
        found = self.operations[op]
        found.setdefault("_polls", 0)
        found["_polls"] += 1
        if found["_polls"] > self.polls_until_done:
            found["status"] = "Succeeded"
            server = self.servers[found["_server"]]
            server["properties"]["state"] = "Ready"
            server["properties"]["fullyQualifiedDomainName"] = found["_fqdn"]
        return 200, {k: v for k, v in found.items() if not k.startswith("_")}, {}

    def server_view(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.servers[name].items() if not k.startswith("_")}

    def _get_lock(self, seen: Seen, sub: str, rg: str, namespace: str, name: str, lock: str) -> Reply:
        found = self.locks.get(f"{name}/{lock}")
        if found is None:
            return 404, arm_error("LockNotFound", f"The lock '{lock}' could not be found."), {}
        return 200, found, {}

    def _put_lock(self, seen: Seen, sub: str, rg: str, namespace: str, name: str, lock: str) -> Reply:
        self.locks[f"{name}/{lock}"] = {
            "id": f"{seen.path}",
            "name": lock,
            "type": "Microsoft.Authorization/locks",
            "properties": seen.body["properties"],
        }
        return 201, self.locks[f"{name}/{lock}"], {}

    def _metrics(self, seen: Seen, resource: str) -> Reply:
        name = resource.rsplit("/", 1)[-1]
        data = []
        if name in self.storage_used:
            data = [{"timeStamp": _now(), "maximum": float(self.storage_used[name])}]
        metric = {
            "id": f"/{resource}/providers/Microsoft.Insights/metrics/storage_used",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": "storage_used", "localizedValue": "Storage used"},
            "unit": "Bytes",
            "timeseries": [{"metadatavalues": [], "data": data}],
            "errorCode": "Success",
        }
        return 200, {"timespan": seen.query.get("timespan"), "interval": "PT1M", "value": [metric]}, {}

    def _get_secret(self, seen: Seen, name: str) -> Reply:
        found = self.secrets.get(name)
        if found is None:
            message = f"A secret with (name/id) {name} was not found in this key vault."
            return 404, arm_error("SecretNotFound", message), {}
        return 200, found, {}

    def _set_secret(self, seen: Seen, name: str) -> Reply:
        version = uuid.uuid4().hex
        self.secrets[name] = {
            "value": seen.body["value"],
            "contentType": seen.body.get("contentType"),
            "tags": seen.body.get("tags"),
            "id": f"{self.url}/secrets/{name}/{version}",
            "attributes": {
                "enabled": True,
                "created": 1700000000,
                "updated": 1700000000,
                "recoveryLevel": "Recoverable+Purgeable",
            },
        }
        return 200, self.secrets[name], {}

    def secret_password(self, name: str) -> str:
        password: str = json.loads(self.secrets[name]["value"])["password"]
        return password
