"""Google Cloud hosting (gcp-sql) through google-api-python-client against a local REST server.

The discovery client sends real HTTP through httplib2 to `GoogleCloudApi` (support/cloud_apis.py),
which answers Cloud SQL Admin v1, Secret Manager v1 and Monitoring v3 in their documented shapes;
the credentials are a service account key whose token endpoint is that server. Each scenario
asserts the requests it sent. The end-to-end job provisions there and applies the schema on the
real PostgreSQL named by the connection variable.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.errors import ConfigurationError, DbinitError, ProvisioningError
from dbinit_pipeline.infrastructure.cloud import (
    ENVIRONMENT_LABEL,
    cloud_disk_space,
    ensure_cloud_infrastructure,
)
from dbinit_pipeline.infrastructure.gcp import application_default_credentials
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.cloud_apis import GoogleCloudApi, google_error, loopback_only

PROJECT = "dbinit-test-project"
FAST = {"poll_interval": 0.01, "wait_timeout": 5}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GoogleCloudApi]:
    server = GoogleCloudApi(PROJECT)
    refused = loopback_only(monkeypatch)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.service_account_file(tmp_path)))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    for var in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_CLOUD_QUOTA_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    # Credentials are kept per key file for the process; each test's server signs its own tokens.
    application_default_credentials.cache_clear()
    yield server
    server.close()
    assert refused == [], "nothing but the local server is reached"


def unique_instance() -> str:
    return f"db-{uuid.uuid4().hex[:10]}"


def gcp_block(api: GoogleCloudApi, instance: str, **settings: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "region": "europe-west1",
        "instance": instance,
        "endpoint_url": api.url,
        "secret_manager_endpoint_url": api.url,
        "monitoring_endpoint_url": api.url,
        **FAST,
        **settings,
    }


def write_config(folder: Path, gcp: dict[str, Any], *, environment: str = "dev", **env: Any) -> LoadedConfig:
    doc = {
        "project": "testproj",
        "database": {"provider": "postgresql", "hosting": "local"},
        "environments": {environment: {"hosting": "gcp-sql", "gcp": gcp, **env}},
        "safety": {"protected_environments": ["production"]},
    }
    path = folder / "dbinit.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def existing_instance(api: GoogleCloudApi, name: str, **settings: Any) -> None:
    """An instance someone made by hand, RUNNABLE (or as `settings` say)."""
    state = settings.pop("state", "RUNNABLE")
    api.instances[name] = {
        "kind": "sql#instance",
        "name": name,
        "project": PROJECT,
        "region": "europe-west1",
        "databaseVersion": "POSTGRES_15",
        "state": state,
        "connectionName": f"{PROJECT}:europe-west1:{name}",
        "settings": {"tier": "db-custom-4-15360", "activationPolicy": "ALWAYS", **settings},
        "ipAddresses": [{"type": "PRIMARY", "ipAddress": "127.0.0.1"}],
    }


# --- created and waited for ---------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["dev", "production"])
def test_missing_instance_is_created_waited_for_and_its_user_password_kept_in_secret_manager(
    tmp_path: Path, api: GoogleCloudApi, environment: str
) -> None:
    instance = unique_instance()
    settings = gcp_block(
        api,
        instance,
        tier="db-custom-2-7680",
        edition="ENTERPRISE_PLUS",
        disk_size_gb=50,
        disk_autoresize_limit_gb=200,
        authorized_networks=["203.0.113.0/24"],
        labels={"team": "data"},
    )
    config = write_config(tmp_path, settings, environment=environment)

    infra = ensure_cloud_infrastructure(config, environment, "gcp-sql", dry_run=False)

    secret = f"{instance}-dbinit-admin"
    assert infra.infrastructure == "provisioned"
    assert infra.created == (
        f"Cloud SQL instance {instance}",
        f"Secret Manager secret {secret}",
        "user dbinit_admin",
    )
    # What was sent, in order: look, create, wait on the operation, look until RUNNABLE, then the
    # secret (stored before the user exists) and the user.
    base = f"/v1/projects/{PROJECT}"
    calls = [c for c in api.calls() if c != "POST /token"]
    assert calls[:2] == [f"GET {base}/instances/{instance}", f"POST {base}/instances"]
    assert calls.count(f"GET {base}/instances/{instance}") >= 2
    assert (
        sum(c.startswith(f"GET {base}/operations/") for c in calls) == 3 + 1
    )  # create (2 RUNNING, DONE), user
    assert calls.index(f"POST {base}/secrets/{secret}:addVersion") < calls.index(
        f"POST {base}/instances/{instance}/users"
    )
    body = api.requests("POST", f"{base}/instances")[0].body
    assert body["name"] == instance
    assert body["region"] == "europe-west1"
    assert body["databaseVersion"] == "POSTGRES_16"
    assert body["settings"]["tier"] == "db-custom-2-7680"
    assert body["settings"]["edition"] == "ENTERPRISE_PLUS"
    assert body["settings"]["dataDiskSizeGb"] == "50"
    assert body["settings"]["storageAutoResize"] is True
    assert body["settings"]["storageAutoResizeLimit"] == "200"
    assert body["settings"]["userLabels"] == {"team": "data", ENVIRONMENT_LABEL: environment}
    assert body["settings"]["deletionProtectionEnabled"] is (environment == "production")
    assert body["settings"]["ipConfiguration"]["authorizedNetworks"][0]["value"] == "203.0.113.0/24"
    # Every API call carried the token of the service account's JWT-bearer grant.
    assert all(
        s.headers.get("authorization", "").startswith("Bearer ") for s in api.seen if s.path != "/token"
    )
    # The user's password is the one kept in Secret Manager; nothing dbinit reports holds it.
    password = api.secret_password(secret)
    assert api.passwords[(instance, "dbinit_admin")] == password
    assert api.secrets[f"projects/{PROJECT}/secrets/{secret}"]["labels"][ENVIRONMENT_LABEL] == environment
    details = infra.details()
    assert details["identifier"] == instance
    assert details["endpoint"] == "127.0.0.1:5432"
    assert details["status"] == "RUNNABLE"
    ref = infra.server_ref("postgresql")
    assert ref.secret_source.startswith("gcp-secret:")
    url = ref.url("appdb")
    assert (url.username, url.password, url.host, url.port) == ("dbinit_admin", password, "127.0.0.1", 5432)
    for text in (json.dumps(details), repr(infra), repr(ref), ref.url_display):
        assert password not in text


def test_dry_run_sends_only_reads_and_says_what_it_would_create(tmp_path: Path, api: GoogleCloudApi) -> None:
    instance = unique_instance()
    config = write_config(tmp_path, gcp_block(api, instance))

    plan = ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=True)

    assert plan.infrastructure == "would_provision"
    assert plan.details()["would_create"] == [
        f"Cloud SQL instance {instance}",
        "user dbinit_admin",
        f"Secret Manager secret {instance}-dbinit-admin",
    ]
    assert {s.method for s in api.seen if s.path != "/token"} == {"GET"}
    assert api.instances == {} and api.secrets == {}


# --- found --------------------------------------------------------------------------------------


def test_existing_instance_is_reused_and_never_modified(tmp_path: Path, api: GoogleCloudApi) -> None:
    instance = unique_instance()
    existing_instance(api, instance)
    config = write_config(tmp_path, gcp_block(api, instance, tier="db-f1-micro"))

    infra = ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert infra.infrastructure == "existing"
    assert infra.created == ()
    assert {s.method for s in api.seen if s.path != "/token"} == {"GET"}, "nothing created or changed"
    assert api.instances[instance]["settings"]["tier"] == "db-custom-4-15360"
    # Someone else's instance: no user added, no secret; credentials must come from the variable.
    assert api.users == {}
    with pytest.raises(ConfigurationError) as caught:
        infra.server_ref("postgresql", "DEV_DATABASE_URL")
    assert caught.value.code == "missing_connection_variable"
    assert "password_secret" in " ".join(caught.value.suggestions)


def test_instance_of_another_environment_is_refused(tmp_path: Path, api: GoogleCloudApi) -> None:
    instance = unique_instance()
    existing_instance(api, instance, userLabels={ENVIRONMENT_LABEL: "production"})
    config = write_config(tmp_path, gcp_block(api, instance), environment="staging")

    with pytest.raises(DbinitError) as caught:
        ensure_cloud_infrastructure(config, "staging", "gcp-sql", dry_run=False)

    assert caught.value.code == "infrastructure_owned_elsewhere"
    assert "production" in caught.value.message


# --- the deadline -------------------------------------------------------------------------------


def test_stopped_instance_fails_at_the_deadline_naming_its_state_and_how_to_start_it(
    tmp_path: Path, api: GoogleCloudApi
) -> None:
    instance = unique_instance()
    existing_instance(api, instance, activationPolicy="NEVER")
    config = write_config(tmp_path, gcp_block(api, instance, wait_timeout=0.3, poll_interval=0.02))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    error = caught.value
    assert error.code == "provisioning_timeout"
    assert error.transient is False
    assert error.details["last_state"] == "STOPPED"
    assert instance in error.message and "'STOPPED'" in error.message
    assert "--activation-policy=ALWAYS" in error.suggestions[0]
    assert "wait_timeout" in " ".join(error.suggestions)
    gets = api.requests("GET", f"/instances/{instance}")
    assert 2 <= len(gets) < 0.3 / 0.02, "polls with growing pauses"
    assert api.instances[instance]["settings"]["activationPolicy"] == "NEVER", "never started by dbinit"


def test_operation_still_running_at_the_deadline_names_its_last_status(
    tmp_path: Path, api: GoogleCloudApi
) -> None:
    api.polls_until_done = 10**6
    config = write_config(tmp_path, gcp_block(api, unique_instance(), wait_timeout=0.2, poll_interval=0.02))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "provisioning_timeout"
    assert caught.value.details["last_state"] == "RUNNING"
    assert "create operation" in caught.value.message
    assert api.requests("GET", "/operations/")


# --- errors -------------------------------------------------------------------------------------


def test_permission_denied_is_permanent_and_names_the_roles(tmp_path: Path, api: GoogleCloudApi) -> None:
    message = "The client is not authorized to make this request."
    api.fail("GET", "/instances/", 403, google_error(403, message, "PERMISSION_DENIED", "notAuthorized"))
    config = write_config(tmp_path, gcp_block(api, unique_instance()))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "gcp_access_denied"
    assert caught.value.transient is False
    assert message in caught.value.message
    assert "roles/cloudsql.admin" in caught.value.suggestions[0]
    assert len(api.requests("GET", "/instances/")) == 1, "not retried"


def test_quota_is_permanent_and_says_where_to_ask_for_more(tmp_path: Path, api: GoogleCloudApi) -> None:
    message = "Quota limit 'DefaultInstancesPerProject' has been exceeded."
    api.fail("POST", r"/instances$", 403, google_error(403, message, "", "quotaExceeded"))
    instance = unique_instance()
    config = write_config(tmp_path, gcp_block(api, instance))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "gcp_quota_exceeded"
    assert caught.value.transient is False
    assert "Quotas" in " ".join(caught.value.suggestions)
    assert len(api.requests("POST", "/instances")) == 1
    assert instance not in api.instances


def test_throttled_then_fine_is_retried_with_backoff(tmp_path: Path, api: GoogleCloudApi) -> None:
    instance = unique_instance()
    existing_instance(api, instance)
    body = google_error(429, "Rate Limit Exceeded", "RESOURCE_EXHAUSTED", "rateLimitExceeded")
    api.fail("GET", f"/instances/{instance}$", 429, body, times=2)
    config = write_config(tmp_path, gcp_block(api, instance))

    infra = ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert infra.infrastructure == "existing"
    assert len(api.requests("GET", f"/instances/{instance}")) >= 3  # two 429s, then the answer


def test_throttled_past_max_attempts_is_transient(tmp_path: Path, api: GoogleCloudApi) -> None:
    body = google_error(429, "Rate Limit Exceeded", "RESOURCE_EXHAUSTED", "rateLimitExceeded")
    api.fail("GET", "/instances/", 429, body, times=100)
    config = write_config(tmp_path, gcp_block(api, unique_instance(), max_attempts=2))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "gcp_throttled"
    assert caught.value.transient is True
    assert len(api.requests("GET", "/instances/")) == 2


def test_invalid_tier_is_permanent_and_names_the_settings(tmp_path: Path, api: GoogleCloudApi) -> None:
    message = "Invalid request: Invalid Tier (db-nope) for (ENTERPRISE) Edition."
    api.fail("POST", r"/instances$", 400, google_error(400, message, "INVALID_ARGUMENT", "invalid"))
    config = write_config(tmp_path, gcp_block(api, unique_instance(), tier="db-nope"))

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "gcp_invalid_request"
    assert "db-nope" in caught.value.message
    assert "environments.dev.gcp" in caught.value.suggestions[0]


def test_unreachable_api_is_transient(tmp_path: Path, api: GoogleCloudApi) -> None:
    closed = GoogleCloudApi(PROJECT)
    closed.close()
    config = write_config(
        tmp_path, gcp_block(api, unique_instance(), endpoint_url=closed.url, max_attempts=1)
    )

    with pytest.raises(ProvisioningError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "gcp_unreachable"
    assert caught.value.transient is True


def test_unknown_gcp_key_names_the_key_and_the_file(tmp_path: Path, api: GoogleCloudApi) -> None:
    with pytest.raises(ConfigurationError) as caught:
        write_config(tmp_path, {**gcp_block(api, "x1"), "machine_type": "big"})

    assert "environments.dev.gcp.machine_type: unknown key" in caught.value.message
    assert str(tmp_path / "dbinit.yaml") in caught.value.message


# --- disk ---------------------------------------------------------------------------------------


def test_disk_space_comes_from_cloud_monitoring_or_says_why_not(tmp_path: Path, api: GoogleCloudApi) -> None:
    measured, silent = unique_instance(), unique_instance()
    for name in (measured, silent):
        existing_instance(api, name)
    api.series[(measured, "disk/bytes_used")] = 19 * 1024**3 // 2  # 0.5 GiB of 10 free
    api.series[(measured, "disk/quota")] = 10 * 1024**3

    low = cloud_disk_space(write_config(tmp_path, gcp_block(api, measured)), "dev", "gcp-sql")
    unknown = cloud_disk_space(write_config(tmp_path, gcp_block(api, silent)), "dev", "gcp-sql")

    assert low["status"] == "degraded"
    assert low["free_bytes"] == 1024**3 // 2
    assert low["source"] == "cloud-monitoring"
    assert unknown["status"] == "unknown"
    assert "no disk/bytes_used point" in unknown["reason"]
    filters = [s.query["filter"] for s in api.requests("GET", "/timeSeries")]
    assert f'resource.labels.database_id = "{PROJECT}:{measured}"' in filters[0]


# --- the job ------------------------------------------------------------------------------------


def test_job_provisions_on_the_local_api_then_initializes_postgresql(
    project: Project, api: GoogleCloudApi
) -> None:
    instance = unique_instance()
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "hosting": "gcp-sql",
                "gcp": gcp_block(api, instance),
            }
        }
    )
    api.series[(instance, "disk/bytes_used")] = 1024**3
    api.series[(instance, "disk/quota")] = 10 * 1024**3
    name = project.database()

    first = project.run(database_name=name)

    assert first["status"] == "success", first
    assert first["result"]["hosting"] == "gcp-sql"
    assert first["result"]["infrastructure"] == "provisioned"
    assert project.server.database_exists(name)
    assert set(CORE_TABLES) <= project.server.tables(name)
    inserts = len(api.requests("POST", "/instances"))

    second = project.run(database_name=name)

    assert second["status"] == "success", second
    assert second["result"]["infrastructure"] == "existing"
    assert second["result"]["migrations_applied"] == 0
    details = second["result"]["infrastructure_details"]
    assert details["identifier"] == instance
    assert details["connection"] == f"environment variable {TEST_URL_VAR}"
    disk = second["result"]["health"]["disk"]
    assert disk["source"] == "cloud-monitoring"
    assert disk["status"] == "healthy"
    assert len(api.requests("POST", "/instances")) == inserts, "the second run creates nothing"
    password = api.secret_password(f"{instance}-dbinit-admin")
    log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
    for text in (json.dumps(first), json.dumps(second), log_text):
        assert password not in text


def test_job_without_connection_variable_connects_to_the_instance_address_with_the_kept_password(
    project: Project, api: GoogleCloudApi
) -> None:
    server = make_url(project.server.url)
    if (server.host, server.port or 5432) != ("127.0.0.1", 5432):
        pytest.skip(
            "Cloud SQL instances answer on port 5432: this needs the PostgreSQL server at 127.0.0.1:5432 "
            "(DBINIT_TEST_POSTGRES_URL), which the instance's address then names"
        )
    instance, admin = unique_instance(), f"dbinit_{uuid.uuid4().hex[:8]}"

    def create_role(user: str, password: str) -> None:
        with project.server.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(user), password)
            )

    api.on_user_insert = create_role
    project.write_config(
        environments={"dev": {"hosting": "gcp-sql", "gcp": gcp_block(api, instance, admin_user=admin)}}
    )
    name = project.database()
    try:
        response = project.run(database_name=name)

        assert response["status"] == "success", response
        details = response["result"]["infrastructure_details"]
        assert details["connection"] == "address and kept password"
        assert details["endpoint"] == "127.0.0.1:5432"
        assert details["password_secret"] == f"projects/{PROJECT}/secrets/{instance}-dbinit-admin"
        with project.server.connect() as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        assert owner == (admin,), "the database was created by the user dbinit made, through the address"
        assert set(CORE_TABLES) <= project.server.tables(name)
        password = api.secret_password(f"{instance}-dbinit-admin")
        log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
        assert password not in json.dumps(response) and password not in log_text
    finally:
        project.server.drop(name)
        with project.server.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def test_job_dry_run_creates_nothing(project: Project, api: GoogleCloudApi) -> None:
    instance = unique_instance()
    project.write_config(environments={"dev": {"hosting": "gcp-sql", "gcp": gcp_block(api, instance)}})

    response = project.run(database_name=project.database(), dry_run=True)

    assert response["status"] == "success", response
    assert response["result"]["infrastructure"] == "would_provision"
    assert api.instances == {}
    assert [s.path for s in api.requests("POST")] == ["/token"] * len(api.requests("POST")), (
        "only the token grant"
    )


def test_dbinit_plan_lists_what_would_be_created_and_sends_no_write(
    project: Project, api: GoogleCloudApi, capsys: pytest.CaptureFixture[str]
) -> None:
    from dbinit_pipeline.cli import main

    instance = unique_instance()
    project.write_config(environments={"dev": {"hosting": "gcp-sql", "gcp": gcp_block(api, instance)}})

    code = main(["--config", str(project.config_path), "plan", "dev", "--database-name", project.database()])

    printed = json.loads(capsys.readouterr().out)
    assert code == 0, printed
    assert printed["result"]["infrastructure"] == "would_provision"
    assert f"Cloud SQL instance {instance}" in printed["result"]["infrastructure_details"]["would_create"]
    assert printed["result"]["plan"]["hash"]
    assert {s.method for s in api.seen if s.path != "/token"} == {"GET"}
    assert api.instances == {}


def test_private_network_instance_is_created_without_a_public_address(
    tmp_path: Path, api: GoogleCloudApi
) -> None:
    network = f"projects/{PROJECT}/global/networks/private-vpc"
    config = write_config(
        tmp_path, gcp_block(api, unique_instance(), private_network=network, disk_autoresize=False)
    )

    ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    settings = api.requests("POST", r"/instances")[0].body["settings"]
    assert settings["ipConfiguration"] == {"ipv4Enabled": False, "privateNetwork": network}
    assert settings["storageAutoResize"] is False


def test_missing_client_libraries_name_the_extra_to_install(
    tmp_path: Path, api: GoogleCloudApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if `pip install dbinit_pipeline` ran without [gcp]: importing the discovery client fails.
    monkeypatch.setitem(sys.modules, "googleapiclient", None)
    monkeypatch.delitem(sys.modules, "dbinit_pipeline.infrastructure.gcp")
    config = write_config(tmp_path, gcp_block(api, unique_instance()))

    with pytest.raises(ConfigurationError) as caught:
        ensure_cloud_infrastructure(config, "dev", "gcp-sql", dry_run=False)

    assert caught.value.code == "missing_extra"
    assert caught.value.suggestions == ["pip install 'dbinit_pipeline[gcp]'"]
    assert api.requests() == []
