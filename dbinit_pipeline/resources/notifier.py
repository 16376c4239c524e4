"""The notifier: tells people about failed runs and approval requests.

A webhook (Slack-compatible JSON; the URL is read from the environment variable the
configuration names) and AWS SNS, each optional. Sending never raises: a delivery that fails
is returned as an error string for the caller to log.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field

from dbinit_pipeline.configuration import LoadedConfig, NotifierSettings
from dbinit_pipeline.redaction import redact


@dataclass(frozen=True)
class Notification:
    """One message: a title, a text, labelled fields and an optional link."""

    title: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)
    link: str | None = None

    def plain(self) -> str:
        lines = [self.title, self.text, *(f"{k}: {v}" for k, v in self.fields.items())]
        if self.link:
            lines.append(self.link)
        return redact("\n".join(lines))

    def slack_payload(self) -> dict[str, object]:
        text = f"*{self.title}*\n{self.text}" + (f"\n<{self.link}|Open the run>" if self.link else "")
        return {
            "text": redact(text),
            "attachments": [
                {
                    "color": "danger",
                    "fields": [
                        {"title": k, "value": redact(v), "short": len(v) < 40} for k, v in self.fields.items()
                    ],
                }
            ],
        }


class Notifier:
    """Delivers notifications through every configured channel."""

    def __init__(self, settings: NotifierSettings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        webhook = self.settings.webhook_url_env and os.environ.get(self.settings.webhook_url_env)
        return bool(webhook or self.settings.sns_topic_arn)

    def send(self, notification: Notification) -> list[str]:
        """Send through each channel; returns the delivery errors (empty when all went out)."""
        errors: list[str] = []
        var = self.settings.webhook_url_env
        url = os.environ.get(var) if var else None
        if url:
            try:
                request = urllib.request.Request(
                    url,
                    data=json.dumps(notification.slack_payload()).encode(),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    reply.read()
            except Exception as exc:
                errors.append(redact(f"webhook ({var}): {type(exc).__name__}: {exc}"))
        if self.settings.sns_topic_arn:
            try:
                import boto3

                client = boto3.client(
                    "sns",
                    region_name=self.settings.sns_region or "us-east-1",
                    endpoint_url=self.settings.sns_endpoint_url,
                )
                client.publish(
                    TopicArn=self.settings.sns_topic_arn,
                    Subject=notification.title[:100],
                    Message=notification.plain(),
                )
            except Exception as exc:
                errors.append(redact(f"sns ({self.settings.sns_topic_arn}): {type(exc).__name__}: {exc}"))
        return errors


def notifier_from_config(config: LoadedConfig) -> Notifier:
    return Notifier(config.model.integration.notifier)
