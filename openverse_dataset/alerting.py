"""Failure alerts: a Slack-compatible JSON post to `OPENVERSE_ALERT_WEBHOOK_URL`, or a log line when unset.

The webhook URL is a secret (anyone holding a Slack incoming-webhook URL can post to the channel), so it is read
from the environment at send time and never appears in a log line, an exception or metadata: errors name only
the variable.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

WEBHOOK_ENV = "OPENVERSE_ALERT_WEBHOOK_URL"
TIMEOUT_SECONDS = 10.0
MAX_TEXT = 3000  # Slack truncates long messages; keep the alert readable at a glance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One alert: a one-line title and a few lines of detail (what failed, where to look)."""

    title: str
    lines: tuple[str, ...] = ()

    def text(self) -> str:
        body = "\n".join([f"*{self.title}*", *self.lines])
        return body if len(body) <= MAX_TEXT else body[: MAX_TEXT - 1] + "…"

    def payload(self) -> dict:
        """Slack's incoming-webhook format (`text`, plus `blocks` for clients that render them)."""
        text = self.text()
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


@dataclass(frozen=True)
class Delivery:
    """What became of an alert: `posted`, `logged` (no webhook configured) or `failed` (with a safe reason)."""

    outcome: str
    detail: str = ""


def send_alert(alert: Alert, *, logger: logging.Logger | None = None) -> Delivery:
    """Post `alert` to the configured webhook; without one, log it. Never raises, never prints the URL."""
    logger = logger or log
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        logger.warning(f"alert (no {WEBHOOK_ENV} set, logged only): {alert.text()}")
        return Delivery("logged")
    if not url.startswith(("http://", "https://")):
        logger.error(f"{WEBHOOK_ENV} is not an http(s) URL; alert logged instead: {alert.text()}")
        return Delivery("failed", f"{WEBHOOK_ENV} is not an http(s) URL")
    req = urllib.request.Request(
        url,
        data=json.dumps(alert.payload()).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        detail = f"the webhook in {WEBHOOK_ENV} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        detail = f"posting to the webhook in {WEBHOOK_ENV} failed: {type(reason).__name__}"
    else:
        if 200 <= status < 300:
            logger.info(f"alert posted to the webhook in {WEBHOOK_ENV}: {alert.title}")
            return Delivery("posted")
        detail = f"the webhook in {WEBHOOK_ENV} answered HTTP {status}"
    logger.error(f"{detail}; alert: {alert.text()}")
    return Delivery("failed", detail)
