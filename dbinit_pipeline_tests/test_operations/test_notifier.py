"""The notifier on real channels: a webhook listener on 127.0.0.1 and SNS on moto's server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from dbinit_pipeline.configuration import NotifierSettings
from dbinit_pipeline.notification import (
    DEFAULT_WEBHOOK_ENV,
    FailedRun,
    Notifier,
    approval_request,
    failure_notification,
    run_url,
)
from dbinit_pipeline_tests.test_operations.conftest import WebhookListener, fields_of, free_port

FAILED = FailedRun(
    environment="staging",
    job="initialize_staging",
    run_id="0b6e2f3c-1111-2222-3333-444455556666",
    stage="create",
    error="permission denied to create database 'myapp_staging'",
    suggestions=("Grant CREATEDB to the role.", "Or create the database by hand and use if_exists: reuse."),
    code="permission_denied",
    database="myapp_staging",
)


def test_webhook_gets_slack_json_naming_everything_a_responder_needs(
    webhook: WebhookListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "https://dagster.example.test/")
    notifier = Notifier(NotifierSettings(webhook_url_env="TEAM_HOOK"), environ={"TEAM_HOOK": webhook.url})
    assert notifier.send(failure_notification(FAILED)) == []
    message = webhook.received[-1]
    text = message["text"]
    assert text.startswith("*dbinit: initialize_staging failed at stage create (staging)*")
    assert f"<https://dagster.example.test/runs/{FAILED.run_id}|Open the run in Dagster>" in text
    fields = fields_of(message)
    assert fields["Environment"] == "staging"
    assert fields["Job"] == "initialize_staging"
    assert fields["Run id"] == FAILED.run_id
    assert fields["Failed stage"] == "create"
    assert fields["Error"] == FAILED.error
    assert fields["Recovery suggestions"] == (
        "• Grant CREATEDB to the role.\n• Or create the database by hand and use if_exists: reuse."
    )
    assert message["attachments"][0]["color"] == "danger"


def test_webhook_url_comes_from_dbinit_webhook_url_when_the_configuration_names_none(
    webhook: WebhookListener,
) -> None:
    notifier = Notifier(NotifierSettings(), environ={DEFAULT_WEBHOOK_ENV: webhook.url})
    assert notifier.configured
    assert notifier.channels == [f"webhook (${DEFAULT_WEBHOOK_ENV})"]
    assert notifier.send(failure_notification(FAILED)) == []
    assert len(webhook.received) == 1


def test_nothing_configured_sends_nothing() -> None:
    notifier = Notifier(NotifierSettings(webhook_url_env="UNSET_HOOK"), environ={})
    assert not notifier.configured
    assert notifier.send(failure_notification(FAILED)) == []


def test_a_webhook_that_is_down_is_reported_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/T000/B000/secret-token"
    notifier = Notifier(NotifierSettings(webhook_url_env="TEAM_HOOK"), environ={"TEAM_HOOK": url}, timeout=2)
    with caplog.at_level(logging.WARNING, logger="dbinit_pipeline.notification"):
        errors = notifier.send(failure_notification(FAILED))
    assert len(errors) == 1
    assert errors[0].startswith("webhook ($TEAM_HOOK): URLError")
    assert "secret-token" not in errors[0], "a webhook URL is a credential"
    assert "not delivered" in caplog.text and "secret-token" not in caplog.text


def test_a_webhook_answering_500_is_reported() -> None:
    listener = WebhookListener(status=500)
    try:
        notifier = Notifier(NotifierSettings(webhook_url_env="H"), environ={"H": listener.url})
        errors = notifier.send(failure_notification(FAILED))
    finally:
        listener.close()
    assert len(errors) == 1 and "HTTP Error 500" in errors[0]
    assert len(listener.received) == 1


def test_a_webhook_url_that_is_not_http_is_refused(tmp_path: Any) -> None:
    target = tmp_path / "never-written"
    notifier = Notifier(NotifierSettings(webhook_url_env="H"), environ={"H": f"file://{target}"})
    errors = notifier.send(failure_notification(FAILED))
    assert errors == ["webhook ($H): the URL must start with http:// or https://"]
    assert not target.exists()


def test_passwords_in_an_error_never_reach_the_webhook(webhook: WebhookListener) -> None:
    leaky = FailedRun(
        **{
            **FAILED.__dict__,
            "error": "could not connect to postgresql://admin:hunter2-secret@db:5432/postgres",
        }
    )
    Notifier(NotifierSettings(webhook_url_env="H"), environ={"H": webhook.url}).send(
        failure_notification(leaky)
    )
    body = json.dumps(webhook.received[-1])
    assert "hunter2-secret" not in body
    assert "postgresql://admin:***@db:5432/postgres" in body


def test_approval_request_names_the_approvers(webhook: WebhookListener) -> None:
    waiting = FailedRun(
        **{**FAILED.__dict__, "environment": "production", "stage": "approve", "code": "approval_required"}
    )
    notification = approval_request(waiting, ["alice", "bob"])
    Notifier(NotifierSettings(webhook_url_env="H"), environ={"H": webhook.url}).send(notification)
    message = webhook.received[-1]
    assert "approval needed for production" in message["text"]
    assert fields_of(message)["Approvers"] == "alice, bob"
    assert message["attachments"][0]["color"] == "warning"


def test_run_link_defaults_to_the_local_webserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_WEBSERVER_URL", raising=False)
    monkeypatch.setenv("DAGSTER_WEBSERVER_PORT", "3456")
    assert run_url("abc") == "http://127.0.0.1:3456/runs/abc"


# -- SNS ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_sns_publishes_the_message_to_the_topic(moto_server: str, aws_credentials: None) -> None:
    region = "eu-west-1"
    sns: Any = boto3.client("sns", region_name=region, endpoint_url=moto_server)
    sqs: Any = boto3.client("sqs", region_name=region, endpoint_url=moto_server)
    topic = sns.create_topic(Name="dbinit-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="dbinit-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    notifier = Notifier(NotifierSettings(sns_topic_arn=topic, sns_endpoint_url=moto_server), environ={})
    assert notifier.send(failure_notification(FAILED)) == []

    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5).get("Messages", [])
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "dbinit: initialize_staging failed at stage create (staging)"
    body = envelope["Message"]
    for line in (
        "Environment: staging",
        "Job: initialize_staging",
        f"Run id: {FAILED.run_id}",
        "Failed stage: create",
        f"Error: {FAILED.error}",
        "• Grant CREATEDB to the role.",
        f"Open the run: {run_url(FAILED.run_id)}",
    ):
        assert line in body


def test_sns_errors_are_reported_not_raised(moto_server: str, aws_credentials: None) -> None:
    missing = "arn:aws:sns:eu-west-1:123456789012:no-such-topic"
    notifier = Notifier(NotifierSettings(sns_topic_arn=missing, sns_endpoint_url=moto_server), environ={})
    errors = notifier.send(failure_notification(FAILED))
    assert len(errors) == 1 and errors[0].startswith(f"sns ({missing}): ")
