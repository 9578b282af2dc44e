"""Tell approvers that an unattended run waits: a webhook, an ntfy-style push, an e-mail.

Each notification carries the exact call (tool, arguments with held secrets masked, risk,
reasons), the deadline and a link to the approval. Sending never blocks the run engine (it
runs as its own task) and a failed send is audited, never fatal: the approval is in the
normal approvals API either way. E-mail goes through the standard library's ``smtplib`` in a
worker thread (STARTTLS and login when configured).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import httpx

from bastion.config.model import NotifyConfig
from bastion.tasks.spec import NotifyTarget

Resolve = Callable[[str], str]  # secret:// reference -> value


def message(*, run_id: str, task: str, owner: str, approval_id: str, tool: str,
            arguments: Any, risk: str, reasons: list[str], expires: float,
            link: str, api: str) -> dict[str, Any]:
    """Return the notification's JSON body (the webhook's payload; the text is built from it)."""
    return {"type": "approval_pending", "run_id": run_id, "task": task, "owner": owner,
            "approval_id": approval_id, "call": {"tool": tool, "arguments": arguments},
            "risk": risk, "reasons": reasons, "expires": expires, "link": link, "api": api}


def text(body: dict[str, Any]) -> str:
    """Return the plain-text form (ntfy body, e-mail body)."""
    call = body["call"]
    args = json.dumps(call["arguments"], ensure_ascii=False, sort_keys=True)
    return (f"Task {body['task']} (run {body['run_id']}, owner {body['owner']}) waits for "
            f"approval of a {body['risk']} call:\n{call['tool']} {args}\n"
            f"Why: {'; '.join(body['reasons']) or 'risk'}\n"
            f"Approve or deny: {body['link']}\n"
            f"API: POST {body['api']} {{\"approve\": true|false}}\n")


async def send(target: NotifyTarget, body: dict[str, Any], config: NotifyConfig,
               resolve: Resolve | None = None) -> None:
    """Send one notification; raise :class:`OSError`/:class:`httpx.HTTPError` on failure."""
    if target.kind == "email":
        await asyncio.to_thread(_mail, target.address, body, config, resolve)
        return
    async with httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False) as client:
        if target.kind == "webhook":
            resp = await client.post(target.address, json=body)
        else:  # ntfy: the message is the body; title, click link and priority are headers
            resp = await client.post(target.address, content=text(body).encode(), headers={
                "Title": f"bastion: {body['task']} waits for approval",
                "Click": body["link"], "Priority": "high", "Tags": "warning"})
        resp.raise_for_status()


def _mail(to: str, body: dict[str, Any], config: NotifyConfig, resolve: Resolve | None) -> None:
    if not config.smtp_host:
        raise OSError("notify.smtp_host is not set, so mailto: targets cannot be sent")
    msg = EmailMessage()
    msg["From"] = config.smtp_from
    msg["To"] = to
    msg["Subject"] = f"bastion: task {body['task']} waits for approval of {body['call']['tool']}"
    msg.set_content(text(body))
    msg.add_attachment(json.dumps(body, ensure_ascii=False, indent=1).encode(),
                       maintype="application", subtype="json", filename="approval.json")
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s) as smtp:
        if config.smtp_starttls:
            smtp.starttls()
        if config.smtp_user:
            password = resolve(config.smtp_password) if resolve and config.smtp_password else ""
            smtp.login(config.smtp_user, password)
        smtp.send_message(msg)
