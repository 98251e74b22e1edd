r"""Secrets out of everything xentlab prints, logs or uploads: one set of rules for every place.

Two rules, applied by `mask_text` to any text (messages, overrides, tags, the uploaded source diff):
- a URI's password: `scheme://user:PASSWORD@host` -> `scheme://user:***@host`. The host is after the *last* `@`
  of the authority, so a password holding `@` is hidden whole; an empty user name (`http://:TOKEN@host`) too; and
  in Hydra's escaped form, as a sweep writes each job's overrides (`http\://u\:PASS\,WORD@host`).
- the value of a secret-named assignment: `NAME=VALUE`, `NAME: VALUE`, `"NAME": "VALUE"` (config lines, query
  strings such as `?token=abc`, environment files, code) where NAME looks secret (SECRET_NAME).
`mask_value(key, value)` applies the same rules to a structured pair (a config entry, a param, a tag, an override).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# A secret-looking name: password, passphrase, secret, credential(s) anywhere; token, key, apikey, auth as a word
# of the name (api_key, MLFLOW_TRACKING_TOKEN, tags.key), or camel-cased (apiKey, accessToken). Not
# `tokens_per_period`, `sort_keys`, `monkey` or `author`.
SECRET_NAME = re.compile(
    r"(?i:passw(?:or)?d|passphrase|secret|credential)"
    r"|(?i:(?:^|[\W_])(?:token|key|apikey|auth)(?=$|[\W_]))"
    r"|[a-z0-9](?:Token|Key|Auth)(?=$|[\W_A-Z])"
)
# scheme://authority; the userinfo is everything up to the authority's last "@".
URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*\\?://)(?P<userinfo>[^\s/?#\"'<>]*)@")
# NAME, an optional closing quote, then ":" (not "://") or "=" (not "=="); the value is only looked at, so a
# non-secret assignment does not hide a secret one inside its value (url=http://h/?token=abc). A character escaped
# with "\" (Hydra's `a\,b`) is part of the value.
ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z_][\w.+~-]*)(?P<quote>[\"']?)(?P<sep>\s*(?::(?!//)|=(?!=))\s*)"
    r"(?=(?P<value>\"[^\"\n]*\"|'[^'\n]*'|(?:\\.|[^\s\"',;&)\]}\\])+))"
)
# Values that are not secrets whatever their name: empty, null, booleans, references to the environment
# (${oc.env:X}, $X) and the type names of annotations (token: str).
HARMLESS = re.compile(r"^(?:[\"']{2}|~|null|none|true|false|\$.*|str|int|float|bool|bytes|optional\[.*|any)$",
                      re.IGNORECASE)


def _mask_userinfo(match: re.Match) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else match[0]


def _mask_assignments(text: str) -> str:
    out, pos = [], 0
    for m in ASSIGNMENT.finditer(text):
        value = m["value"]
        if m.start() < pos or not SECRET_NAME.search(m["name"]) or HARMLESS.match(value) or value == MASK:
            continue
        quoted = value[0] in "\"'" and len(value) > 1
        out += [text[pos:m.end()], f"{value[0]}{MASK}{value[0]}" if quoted else MASK]
        pos = m.end() + len(value)
    return "".join(out) + text[pos:]


def mask_text(text: str) -> str:
    """`text` with every URI password and every secret-named assignment's value replaced by `***`."""
    return _mask_assignments(URI_USERINFO.sub(_mask_userinfo, text))


mask_uri = mask_text  # the same rules: a URI is a text


def mask_value(key: str, value: Any) -> Any:
    """A config entry, param, tag or override value: all of it masked when its key looks secret (the last dotted
    part, or any part: `secrets.db`), else the text rules; empty, null and non-string values pass unchanged
    unless the key is secret."""
    name = str(key).lstrip("+~")
    if value is None or value == "" or value == "null":
        return value
    if SECRET_NAME.search(name):
        return MASK
    return mask_text(value) if isinstance(value, str) else value


def mask_override(override: str) -> str:
    """One command-line override `key=value` (masked as a pair), or free text."""
    key, sep, value = override.partition("=")
    return f"{key}={mask_value(key, value)}" if sep else mask_text(override)
