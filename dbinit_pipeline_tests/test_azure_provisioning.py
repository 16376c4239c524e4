"""Azure hosting (azure-sql) through Azure's management libraries against a local REST server.

The generated clients (azure-mgmt-postgresqlflexibleservers, -mysqlflexibleservers,
-resource-locks, -monitor, azure-keyvault-secrets) send real HTTPS through azure-core to
`AzureApi` (support/cloud_apis.py), which answers ARM's flexible server, async operation, lock and
metrics APIs and Key Vault's secrets API in their documented shapes. azure-identity's
DefaultAzureCredential gets its token from the same server through the service principal
variables (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET) and the configured authority.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.errors import ConfigurationError, DbinitError, ProvisioningError
from dbinit_pipeline.infrastructure import azure as azure_module
from dbinit_pipeline.infrastructure.cloud import (
    ENVIRONMENT_LABEL,
    cloud_disk_space,
    ensure_cloud_infrastructure,
)
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.cloud_apis import (
    AzureApi,
    arm_error,
    loopback_only,
    self_signed_certificate,
)

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
GROUP = "dbinit-rg"
FAST = {"poll_interval": 0.01, "wait_timeout": 5}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def api(tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[AzureApi]:
    server = AzureApi(tls)
    refused = loopback_only(monkeypatch)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))  # trusted by requests, under azure-core
    monkeypatch.setenv("AZURE_TENANT_ID", AzureApi.TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", "dbinit-test-app")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "test-secret")
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no-az"))
    for var in (
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_AUTHORITY_HOST",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    # Credentials and Key Vault clients are kept per authority and vault: each server is a new one.
    azure_module.credential.cache_clear()
    azure_module._secret_client.cache_clear()
    yield server
    server.close()
    assert refused == [], "nothing but the local server is reached"


def unique_server() -> str:
    return f"db-{uuid.uuid4().hex[:10]}"


def azure_block(api: AzureApi, server: str, **settings: Any) -> dict[str, Any]:
    return {
        "subscription_id": SUBSCRIPTION,
        "resource_group": GROUP,
        "location": "westeurope",
        "server": server,
        "key_vault_url": api.url,
        "endpoint_url": api.url,
        "authority_host": api.url,
        **FAST,
        **settings,
    }


def write_config(
    folder: Path, azure: dict[str, Any], *, environment: str = "dev", provider: str = "postgresql", **env: Any
) -> LoadedConfig:
    doc = {
        "project": "testproj",
        "database": {"provider": provider, "hosting": "local"},
        "environments": {environment: {"hosting": "azure-sql", "azure": azure, **env}},
        "safety": {"protected_environments": ["production"]},
    }
    path = folder / "dbinit.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def existing_server(api: AzureApi, name: str, *, state: str = "Ready", **tags: str) -> None:
    api.servers[name] = {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.DBforPostgreSQL/"
        f"flexibleServers/{name}",
        "name": name,
        "type": "Microsoft.DBforPostgreSQL/flexibleServers",
        "location": "westeurope",
        "tags": tags,
        "sku": {"name": "Standard_D4s_v3", "tier": "GeneralPurpose"},
        "properties": {
            "administratorLogin": "someone",
            "version": "15",
            "state": state,
            "fullyQualifiedDomainName": f"{name}.postgres.database.azure.com",
            "storage": {"storageSizeGB": 128, "autoGrow": "Disabled"},
        },
    }


def api_calls(api: AzureApi) -> list[str]:
    return [c for c in api.calls() if "/oauth2/" not in c and "/.well-known/" not in c]


# --- created and waited for ---------------------------------------------------------------------


@pytest.mark.parametrize(("environment", "provider"), [("dev", "postgresql"), ("production", "mysql")])
def test_missing_server_is_created_on_the_pollers_and_its_password_kept_in_key_vault(
    tmp_path: Path, api: AzureApi, environment: str, provider: str
) -> None:
    server = unique_server()
    settings = azure_block(
        api,
        server,
        sku_name="Standard_D2ds_v4",
        sku_tier="GeneralPurpose",
        storage_gb=64,
        tags={"team": "data"},
    )
    config = write_config(tmp_path, settings, environment=environment, provider=provider)

    infra = ensure_cloud_infrastructure(config, environment, "azure-sql", dry_run=False)

    namespace = "Microsoft.DBforPostgreSQL" if provider == "postgresql" else "Microsoft.DBforMySQL"
    resource = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/{namespace}/flexibleServers/{server}"
    )
    secret = f"{server}-admin"
    expected = [
        f"Key Vault secret {secret}",
        f"Azure Database for {'PostgreSQL' if provider == 'postgresql' else 'MySQL'} flexible server {server}",
    ]
    if environment == "production":
        expected.append("delete lock dbinit-protected")
    assert list(infra.created) == expected
    calls = api_calls(api)
    assert calls[0] == f"GET {resource}"
    # Key Vault's challenge (401, then the same request with a token), then the secret is stored
    # before the server that uses it is created.
    assert calls.index(f"PUT /secrets/{secret}") < calls.index(f"PUT {resource}")
    assert sum(c.startswith("GET /asyncOperations/") for c in calls) == 3  # InProgress twice, Succeeded
    put = api.requests("PUT", resource)[0]
    assert put.query["api-version"]
    assert put.body["location"] == "westeurope"
    assert put.body["sku"] == {"name": "Standard_D2ds_v4", "tier": "GeneralPurpose"}
    assert put.body["tags"] == {"team": "data", ENVIRONMENT_LABEL: environment}
    properties = put.body["properties"]
    assert properties["version"] == ("16" if provider == "postgresql" else "8.0.21")
    assert properties["storage"]["storageSizeGB"] == 64
    assert properties["administratorLogin"] == "dbinit_admin"
    password = api.secret_password(secret)
    assert properties["administratorLoginPassword"] == password
    assert api.secrets[secret]["tags"][ENVIRONMENT_LABEL] == environment
    locks = [s for s in api.requests("PUT") if "/locks/" in s.path]
    if environment == "production":
        assert locks[0].body["properties"]["level"] == "CanNotDelete"
    else:
        assert locks == []
    assert all(
        s.headers.get("authorization") == "Bearer ya29.local-test-token"
        for s in api.seen
        if s.method == "PUT"
    )
    details = infra.details()
    port = 5432 if provider == "postgresql" else 3306
    suffix = "postgres" if provider == "postgresql" else "mysql"
    assert details["identifier"] == server
    assert details["endpoint"] == f"{server}.{suffix}.database.azure.com:{port}"
    assert details["status"] == "Ready"
    ref = infra.server_ref(provider)
    url = ref.url()
    assert (url.username, url.password) == ("dbinit_admin", password)
    for text in (json.dumps(details), repr(infra), repr(ref), ref.url_display):
        assert password not in text


def test_dry_run_sends_only_reads(tmp_path: Path, api: AzureApi) -> None:
    server = unique_server()
    config = write_config(tmp_path, azure_block(api, server), environment="production")

    plan = ensure_cloud_infrastructure(config, "production", "azure-sql", dry_run=True)

    assert plan.infrastructure == "would_provision"
    assert plan.details()["would_create"] == [
        f"Azure Database for PostgreSQL flexible server {server}",
        f"Key Vault secret {server}-admin",
        "delete lock dbinit-protected",
    ]
    assert {c.split()[0] for c in api_calls(api)} == {"GET"}
    assert api.servers == {} and api.secrets == {}


# --- found --------------------------------------------------------------------------------------


def test_existing_server_is_reused_and_never_modified_or_locked(tmp_path: Path, api: AzureApi) -> None:
    server = unique_server()
    existing_server(api, server)
    config = write_config(
        tmp_path, azure_block(api, server, sku_name="Standard_B1ms"), environment="production"
    )

    infra = ensure_cloud_infrastructure(config, "production", "azure-sql", dry_run=False)

    assert infra.infrastructure == "existing"
    assert infra.username == "someone"
    assert {c.split()[0] for c in api_calls(api)} == {"GET"}, "nothing created, changed or locked"
    assert api.servers[server]["sku"]["name"] == "Standard_D4s_v3"
    with pytest.raises(ConfigurationError) as caught:
        infra.server_ref("postgresql", "PROD_DATABASE_URL")
    assert caught.value.code == "missing_connection_variable"


def test_server_of_another_environment_is_refused(tmp_path: Path, api: AzureApi) -> None:
    server = unique_server()
    existing_server(api, server, **{ENVIRONMENT_LABEL: "production"})
    config = write_config(tmp_path, azure_block(api, server), environment="staging")

    with pytest.raises(DbinitError) as caught:
        ensure_cloud_infrastructure(config, "staging", "azure-sql", dry_run=False)

    assert caught.value.code == "infrastructure_owned_elsewhere"


# --- the deadline -------------------------------------------------------------------------------


def test_stopped_server_fails_at_the_deadline_naming_its_state(tmp_path: Path, api: AzureApi) -> None:
    server = unique_server()
    existing_server(api, server, state="Stopped")
    config = write_config(tmp_path, azure_block(api, server, wait_timeout=0.3, poll_interval=0.02))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    error = caught.value
    assert error.code == "provisioning_timeout"
    assert error.transient is False
    assert error.details["last_state"] == "Stopped"
    assert (
        f"az postgres flexible-server start --resource-group {GROUP} --name {server}" in error.suggestions[0]
    )
    assert api.servers[server]["properties"]["state"] == "Stopped"


def test_creation_still_in_progress_at_the_deadline_names_the_pollers_status(
    tmp_path: Path, api: AzureApi
) -> None:
    api.polls_until_done = 10**6
    config = write_config(tmp_path, azure_block(api, unique_server(), wait_timeout=0.3, poll_interval=0.02))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert caught.value.code == "provisioning_timeout"
    assert caught.value.details["last_state"] == "InProgress"
    assert "creation of" in caught.value.message


# --- errors -------------------------------------------------------------------------------------


def test_authorization_failed_is_permanent_and_names_the_roles(tmp_path: Path, api: AzureApi) -> None:
    message = (
        "The client 'dbinit-test-app' with object id '0' does not have authorization to perform action "
        "'Microsoft.DBforPostgreSQL/flexibleServers/read' over scope '/subscriptions/...'."
    )
    api.fail("GET", "/flexibleServers/", 403, arm_error("AuthorizationFailed", message))
    config = write_config(tmp_path, azure_block(api, unique_server()))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert caught.value.code == "azure_access_denied"
    assert caught.value.transient is False
    assert "AuthorizationFailed" in caught.value.message
    assert "Contributor" in caught.value.suggestions[0]
    assert len(api.requests("GET", "/flexibleServers/")) == 1


def test_quota_is_permanent(tmp_path: Path, api: AzureApi) -> None:
    message = (
        "Operation could not be completed as it results in exceeding approved standardDSv3Family Cores quota."
    )
    api.fail("PUT", "/flexibleServers/", 409, arm_error("QuotaExceeded", message))
    server = unique_server()
    config = write_config(tmp_path, azure_block(api, server))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert caught.value.code == "azure_quota_exceeded"
    assert caught.value.transient is False
    assert "Usage + quotas" in " ".join(caught.value.suggestions)
    assert len(api.requests("PUT", "/flexibleServers/")) == 1


def test_throttled_then_fine_is_retried(tmp_path: Path, api: AzureApi) -> None:
    server = unique_server()
    existing_server(api, server)
    body = arm_error(
        "SubscriptionRequestsThrottled", "Number of read requests for subscription exceeded the limit."
    )
    api.fail("GET", f"/flexibleServers/{server}$", 429, body, times=2, **{"Retry-After": "0"})
    config = write_config(tmp_path, azure_block(api, server))

    infra = ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert infra.infrastructure == "existing"
    assert len(api.requests("GET", f"/flexibleServers/{server}")) >= 3


def test_throttled_past_max_attempts_is_transient(tmp_path: Path, api: AzureApi) -> None:
    body = arm_error(
        "SubscriptionRequestsThrottled", "Number of read requests for subscription exceeded the limit."
    )
    api.fail("GET", "/flexibleServers/", 429, body, times=100, **{"Retry-After": "0"})
    config = write_config(tmp_path, azure_block(api, unique_server(), max_attempts=2))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert caught.value.code == "azure_throttled"
    assert caught.value.transient is True
    assert len(api.requests("GET", "/flexibleServers/")) == 2


def test_wrong_client_secret_is_a_credentials_error(
    tmp_path: Path, api: AzureApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    config = write_config(tmp_path, azure_block(api, unique_server()))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert caught.value.code in {"azure_credentials_invalid", "azure_credentials_missing"}
    assert caught.value.transient is False


def test_missing_resource_group_names_the_key(tmp_path: Path, api: AzureApi) -> None:
    settings = azure_block(api, unique_server())
    del settings["resource_group"]
    config = write_config(tmp_path, settings)

    with pytest.raises(ConfigurationError) as caught:
        ensure_cloud_infrastructure(config, "dev", "azure-sql", dry_run=False)

    assert "environments.dev.azure.resource_group" in caught.value.message


def test_unknown_azure_key_names_the_key_and_the_file(tmp_path: Path, api: AzureApi) -> None:
    with pytest.raises(ConfigurationError) as caught:
        write_config(tmp_path, {**azure_block(api, "x1x"), "vm_size": "big"})

    assert "environments.dev.azure.vm_size: unknown key" in caught.value.message
    assert str(tmp_path / "dbinit.yaml") in caught.value.message


# --- disk ---------------------------------------------------------------------------------------


def test_disk_space_comes_from_azure_monitor_or_says_why_not(tmp_path: Path, api: AzureApi) -> None:
    measured, silent = unique_server(), unique_server()
    existing_server(api, measured)
    existing_server(api, silent)
    api.storage_used[measured] = 120 * 1024**3  # of 128 GiB

    low = cloud_disk_space(write_config(tmp_path, azure_block(api, measured)), "dev", "azure-sql")
    unknown = cloud_disk_space(write_config(tmp_path, azure_block(api, silent)), "dev", "azure-sql")

    assert low["status"] == "degraded"
    assert low["free_bytes"] == 8 * 1024**3
    assert low["source"] == "azure-monitor"
    assert unknown["status"] == "unknown"
    assert "no storage_used point" in unknown["reason"]
    query = api.requests("GET", "/providers/Microsoft.Insights/metrics")[0].query
    assert query["metricnames"] == "storage_used"
    assert query["aggregation"] == "Maximum"


# --- the job ------------------------------------------------------------------------------------


def test_job_provisions_on_the_local_api_then_initializes_postgresql(project: Project, api: AzureApi) -> None:
    server = unique_server()
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "hosting": "azure-sql",
                "azure": azure_block(api, server),
            }
        }
    )
    name = project.database()

    first = project.run(database_name=name)

    assert first["status"] == "success", first
    assert first["result"]["hosting"] == "azure-sql"
    assert first["result"]["infrastructure"] == "provisioned"
    assert project.server.database_exists(name)
    assert set(CORE_TABLES) <= project.server.tables(name)
    puts = len(api.requests("PUT"))

    second = project.run(database_name=name)

    assert second["status"] == "success", second
    assert second["result"]["infrastructure"] == "existing"
    assert second["result"]["migrations_applied"] == 0
    details = second["result"]["infrastructure_details"]
    assert details["identifier"] == server
    assert details["endpoint"] == f"{server}.postgres.database.azure.com:5432"
    disk = second["result"]["health"]["disk"]
    assert disk["source"] == "azure-monitor"
    assert disk["status"] == "unknown" and "no storage_used point" in disk["reason"]
    assert len(api.requests("PUT")) == puts, "the second run creates nothing"
    password = api.secret_password(f"{server}-admin")
    log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
    for text in (json.dumps(first), json.dumps(second), log_text):
        assert password not in text


def test_job_without_connection_variable_uses_the_address_and_key_vault_and_never_shows_the_password(
    project: Project, api: AzureApi
) -> None:
    server = unique_server()
    project.write_config(environments={"dev": {"hosting": "azure-sql", "azure": azure_block(api, server)}})

    response = project.run(database_name=project.database())

    # The server's name is Azure's, which no resolver here knows: the run gets as far as connecting
    # to it as the administrator, with the password read from Key Vault.
    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["details"]["identifier"] == server
    assert response["details"]["connection"] == "address and kept password"
    assert response["details"]["endpoint"] == f"{server}.postgres.database.azure.com:5432"
    assert any("firewall-rule" in s for s in response["recovery"]["suggestions"])
    assert api.requests("GET", f"/secrets/{server}-admin"), "the password was read from Key Vault"
    password = api.secret_password(f"{server}-admin")
    log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
    assert password not in json.dumps(response) and password not in log_text


def test_job_dry_run_creates_nothing(project: Project, api: AzureApi) -> None:
    project.write_config(
        environments={"dev": {"hosting": "azure-sql", "azure": azure_block(api, unique_server())}}
    )

    response = project.run(database_name=project.database(), dry_run=True)

    assert response["status"] == "success", response
    assert response["result"]["infrastructure"] == "would_provision"
    assert api.servers == {} and api.secrets == {}
    assert {c.split()[0] for c in api_calls(api)} == {"GET"}
