"""RFC 5424 syslog and ArcSight CEF formatting, sent over UDP or TCP (RFC 6587 octet counting)."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from bastion import __version__

FACILITY = 13  # "log audit"
SEVERITY = {"critical": 2, "error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
SD_ID = "bastion@32473"  # 32473: the IANA example enterprise number (RFC 5612)
_HOST = (socket.gethostname() or "-")[:255]


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _ascii_token(text: str, limit: int) -> str:
    out = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return out or "-"


def rfc5424(message: str, *, severity: str = "info", msgid: str = "audit",
            params: dict[str, Any] | None = None, ts: float | None = None) -> bytes:
    """Return one RFC 5424 message: ``<PRI>1 TIME HOST APP PROCID MSGID [SD] MSG``."""
    pri = FACILITY * 8 + SEVERITY.get(severity, 6)
    when = datetime.fromtimestamp(ts, UTC) if ts is not None else datetime.now(UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if params:
        body = " ".join(f'{_ascii_token(k.replace("=", "_"), 32)}="{_sd_escape(str(v))}"'
                        for k, v in params.items() if v is not None)
        sd = f"[{SD_ID} {body}]"
    else:
        sd = "-"
    head = (f"<{pri}>1 {stamp} {_ascii_token(_HOST, 255)} bastion {os.getpid()} "
            f"{_ascii_token(msgid, 32)} {sd}")
    return (head + " " + message.replace("\n", " ")).encode("utf-8")


def _cef_head(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cef_val(text: Any) -> str:
    return (str(text).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "")
            .replace("\n", "\\n"))


CEF_SEVERITY = {"denied": 7, "error": 5, "allowed": 3, "approved": 3}


def cef(record: dict[str, Any]) -> str:
    """Return an audit record as a CEF:0 line (``rt`` in epoch ms, custom strings labelled)."""
    kind = str(record.get("kind", "event"))
    decision = record.get("decision")
    sev = 8 if kind.startswith("intel.alert") else CEF_SEVERITY.get(str(decision), 2)
    name = f"{kind} {record.get('tool') or ''}".strip()
    ext: dict[str, Any] = {
        "rt": int(float(record.get("ts", 0)) * 1000),
        "act": decision,
        "suser": record.get("actor"),
        "externalId": record.get("id"),
    }
    for n, (label, key) in enumerate((("session", "session_id"), ("tool", "tool"),
                                      ("risk", "risk"), ("chainHash", "hash")), start=1):
        if record.get(key) not in (None, ""):
            ext[f"cs{n}Label"] = label
            ext[f"cs{n}"] = record[key]
    if record.get("detail") is not None:
        ext["msg"] = json.dumps(record["detail"], ensure_ascii=False, default=str)[:1024]
    body = " ".join(f"{k}={_cef_val(v)}" for k, v in ext.items() if v not in (None, ""))
    return (f"CEF:0|bastion|bastion|{_cef_head(__version__)}|{_cef_head(kind)}|"
            f"{_cef_head(name)}|{sev}|{body}")


class SyslogSender:
    """Sends messages to a syslog receiver; TCP frames them with octet counting."""

    def __init__(self, host: str, port: int, protocol: str = "udp", timeout_s: float = 5.0
                 ) -> None:
        self.addr = (host, port)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
            if self.protocol == "tcp":
                self._sock = socket.create_connection(self.addr, timeout=self.timeout_s)
            else:
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
        return self._sock

    def send(self, messages: list[bytes]) -> None:
        """Send every message (raises OSError on failure; the connection is then reset)."""
        try:
            sock = self._connect()
            if self.protocol == "tcp":
                sock.sendall(b"".join(str(len(m)).encode() + b" " + m for m in messages))
            else:
                for m in messages:
                    sock.sendto(m[:65000], self.addr)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
