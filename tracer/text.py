"""Strings from the system on a terminal: interface names, container names,
drop reasons, paths. Anyone who can name an interface or a container can
put escape sequences in it (an interface named ``ESC[7m`` reverses the
user's terminal), so human output shows control characters escaped, as
``\\x1b``. JSON output needs none of this: its encoder escapes them.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and the Unicode format characters that
# reorder or hide text (bidi overrides and isolates, zero-width joiners...).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` with every character that could steer a terminal escaped;
    None stays the empty string's job of the caller (returned as 'None')."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s) if _UNSAFE.search(s) else s
