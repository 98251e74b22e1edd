"""Secrets out of everything xentlab prints, logs or uploads: passwords in URIs and secret-named values."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SECRET_NAME = re.compile(r"password|passwd|token|secret|key|credential", re.IGNORECASE)
MASK = "***"
URI_CREDENTIALS = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]+):[^\s@/]+@")


def mask_text(text: str) -> str:
    """Hides the password of every `scheme://user:password@host` inside free text (messages, overrides)."""
    return URI_CREDENTIALS.sub(rf"\1:{MASK}@", text)


def mask_uri(value: str) -> str:
    """Hides the password of credentials inside a URI (scheme://user:password@host)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    netloc = f"{parts.username}:{MASK}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
