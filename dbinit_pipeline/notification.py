"""The notifier: tells people about failed runs and approval requests.

Two channels, each optional: a webhook (Slack-compatible JSON: a text and fields; the URL is
read from the environment variable the configuration names, `DBINIT_WEBHOOK_URL` when it names
none) and AWS SNS (a topic ARN, through boto3). Sending never raises: a delivery that fails is
logged and returned as an error string, so a broken channel never breaks the sensor that sends.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dbinit_pipeline.configuration import LoadedConfig, NotifierSettings
from dbinit_pipeline.redaction import redact, register_secret

DEFAULT_WEBHOOK_ENV = "DBINIT_WEBHOOK_URL"
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
_COLORS = {"failure": "danger", "approval": "warning", "info": "good"}

logger = logging.getLogger(__name__)


def webserver_url() -> str:
    """The Dagster UI's base URL: $DAGSTER_WEBSERVER_URL, else the local `make ui` address."""
    explicit = os.environ.get(WEBSERVER_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    port = os.environ.get("DAGSTER_WEBSERVER_PORT") or "3000"
    return f"http://127.0.0.1:{port}"


def run_url(run_id: str) -> str:
    """The link to one run in the Dagster UI."""
    return f"{webserver_url()}/runs/{run_id}"


@dataclass(frozen=True)
class Notification:
    """One message: a title, a text, labelled fields and an optional link."""

    title: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)
    link: str | None = None
    kind: str = "failure"  # failure | approval | info: only the colour of the Slack attachment

    def plain(self) -> str:
        """The message as plain text (SNS, e-mail subscribers)."""
        lines = [self.title, "", self.text, ""]
        lines += [f"{k}: {v}" for k, v in self.fields.items()]
        if self.link:
            lines += ["", f"Open the run: {self.link}"]
        return redact("\n".join(lines))

    def slack_payload(self) -> dict[str, object]:
        """Slack-compatible JSON (also understood by Mattermost, Rocket.Chat and Teams connectors)."""
        text = f"*{self.title}*\n{self.text}" + (
            f"\n<{self.link}|Open the run in Dagster>" if self.link else ""
        )
        return {
            "text": redact(text),
            "attachments": [
                {
                    "fallback": redact(self.title),
                    "color": _COLORS.get(self.kind, "danger"),
                    "fields": [
                        {"title": k, "value": redact(v), "short": len(v) < 40 and "\n" not in v}
                        for k, v in self.fields.items()
                    ],
                }
            ],
        }


@dataclass(frozen=True)
class FailedRun:
    """What a notification says about a failed run."""

    environment: str
    job: str
    run_id: str
    stage: str
    error: str
    suggestions: tuple[str, ...] = ()
    code: str | None = None
    database: str | None = None
    approvers_notified: bool = False  # the approval gate already asked the approvers itself
    tenants: tuple[str, ...] = ()  # a fleet run: every tenant that failed


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"• {item}" for item in items) if items else "none"


def failure_notification(failed: FailedRun) -> Notification:
    """The message for a failed run: environment, job, run, stage, error, what to do, and a link."""
    fields = {
        "Environment": failed.environment,
        "Job": failed.job,
        "Run id": failed.run_id,
        "Failed stage": failed.stage,
        "Error": failed.error,
        "Recovery suggestions": _bullets(failed.suggestions),
    }
    if failed.code:
        fields["Error code"] = failed.code
    if failed.database:
        fields["Database"] = failed.database
    if failed.tenants:
        fields["Failed tenants"] = ", ".join(failed.tenants)
    return Notification(
        title=f"dbinit: {failed.job} failed at stage {failed.stage} ({failed.environment})",
        text=failed.error,
        fields=fields,
        link=run_url(failed.run_id),
        kind="failure",
    )


def approval_request(
    failed: FailedRun,
    approvers: Sequence[str],
) -> Notification:
    """The message that asks the approvers of a protected environment to approve a run's plan."""
    who = ", ".join(approvers) if approvers else "nobody is configured (safety.approvers)"
    fields = {
        "Environment": failed.environment,
        "Job": failed.job,
        "Run id": failed.run_id,
        "Failed stage": failed.stage,
        "Error": failed.error,
        "Approvers": who,
        "Recovery suggestions": _bullets(failed.suggestions),
    }
    if failed.database:
        fields["Database"] = failed.database
    return Notification(
        title=f"dbinit: approval needed for {failed.environment} ({failed.job})",
        text=(
            f"A run of {failed.job} is waiting for an approval of its plan. {failed.error}. "
            "Once approved, re-execute the run from the UI or launch it again."
        ),
        fields=fields,
        link=run_url(failed.run_id),
        kind="approval",
    )


class Notifier:
    """Delivers notifications through every configured channel."""

    def __init__(
        self,
        settings: NotifierSettings,
        *,
        timeout: float = 5.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self._environ = environ if environ is not None else os.environ

    @property
    def webhook_env(self) -> str:
        """The variable that holds the webhook URL."""
        return self.settings.webhook_url_env or DEFAULT_WEBHOOK_ENV

    def _webhook_url(self) -> str | None:
        url = self._environ.get(self.webhook_env) or None
        if url:
            register_secret(url)  # a Slack webhook URL is a credential
        return url

    @property
    def channels(self) -> list[str]:
        """The channels that would be used now, by name (never the webhook URL)."""
        found = []
        if self._webhook_url():
            found.append(f"webhook (${self.webhook_env})")
        if self.settings.sns_topic_arn:
            found.append(f"sns ({self.settings.sns_topic_arn})")
        return found

    @property
    def configured(self) -> bool:
        return bool(self.channels)

    def send(self, notification: Notification) -> list[str]:
        """Send through each channel; returns the delivery errors (empty when all went out)."""
        errors: list[str] = []
        url = self._webhook_url()
        if url:
            error = self._post_webhook(url, notification)
            if error:
                errors.append(error)
        if self.settings.sns_topic_arn:
            error = self._publish_sns(notification)
            if error:
                errors.append(error)
        for error in errors:
            logger.warning("notification %r not delivered: %s", notification.title, error)
        return errors

    def _post_webhook(self, url: str, notification: Notification) -> str | None:
        where = f"webhook (${self.webhook_env})"
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return f"{where}: the URL must start with http:// or https://"
        try:
            request = urllib.request.Request(
                url,
                data=json.dumps(notification.slack_payload()).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                reply.read()
        except Exception as exc:  # a notification must never break its caller
            return redact(f"{where}: {type(exc).__name__}: {exc}")
        return None

    def _publish_sns(self, notification: Notification) -> str | None:
        topic = self.settings.sns_topic_arn
        try:
            import boto3

            client = boto3.client(
                "sns",
                region_name=self.settings.sns_region or _region_of(topic) or "us-east-1",
                endpoint_url=self.settings.sns_endpoint_url,
            )
            client.publish(
                TopicArn=str(topic),
                # SNS subjects: ASCII, no line breaks, at most 100 characters
                Subject=" ".join(notification.title.encode("ascii", "replace").decode().split())[:100],
                Message=notification.plain(),
            )
        except Exception as exc:  # a notification must never break its caller
            return redact(f"sns ({topic}): {type(exc).__name__}: {exc}")
        return None


def _region_of(arn: str | None) -> str | None:
    """arn:aws:sns:<region>:<account>:<topic> -> <region>."""
    parts = (arn or "").split(":")
    if len(parts) < 6 or not parts[3]:
        return None
    return parts[3]


def notifier_from_config(config: LoadedConfig) -> Notifier:
    """The notifier the configuration describes (`integration.notifier`)."""
    return Notifier(config.model.integration.notifier)
