"""Make untrusted text safe to put on a terminal.

Model output, tool output, tool arguments and remote MCP descriptions can carry terminal
control sequences (``ESC[1A ESC[2K`` rewrites lines the human already read, OSC 52 writes the
clipboard, OSC 0 sets the title). Every CLI path that writes such text goes through
:func:`visible` first, so the terminal shows the bytes instead of obeying them.
"""

from __future__ import annotations

import re

# C0 controls except \t and \n, DEL, C1 controls (8-bit CSI/OSC), and the Unicode
# bidirectional overrides/isolates that reorder what is displayed ("Trojan source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    r"""Return ``text`` with control characters (except ``\n`` and ``\t``) as visible escapes.

    ``"\x1b[2K"`` becomes the six characters ``\x1b[2K``; ``\r`` becomes ``\x0d``.
    """
    return _UNSAFE.sub(_escape, text)
