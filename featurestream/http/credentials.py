"""Access keys the server accepts: the configured pair plus any from an AWS-style credentials file.

The file is the AWS shared-credentials format, so the same file works with the AWS CLI and
SDKs (they ignore options they do not know). featurestream adds three optional options per
section, the key's permissions (see ``permissions.py``)::

    [analytics]
    aws_access_key_id = AKIAANALYTICS
    aws_secret_access_key = ...
    featurestream_read = orders-*, customers
    featurestream_write = orders-*
    featurestream_admin =

A section with none of them keeps full access (files written before permissions existed
mean what they meant). A section with any of them may do exactly what they list: an action
left out, or listed with no pattern, is not allowed.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass

from featurestream.http.errors import ApiError
from featurestream.http.permissions import Action, PatternError, Permissions

OPTION_PREFIX = "featurestream_"
PERMISSION_OPTIONS = {f"{OPTION_PREFIX}{a.value}": a for a in Action}
# Options someone writing permissions by hand might use instead of the prefixed ones; were they
# ignored, the section would silently keep full access, so they are refused instead.
_MISTAKES = {"read", "write", "admin", "permissions", "featurestream", "allow", "deny"}
_SEPARATORS = re.compile(r"[\s,]+")


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message names the file, section and key."""


@dataclass(frozen=True)
class AccessKey:
    """One key the server accepts: the secret it signs with and what it may do."""

    secret: str
    permissions: Permissions


def _permissions(items: configparser.SectionProxy, where: str) -> Permissions:
    names = set(items.keys())
    for option in names:
        if option in _MISTAKES or (option.startswith(OPTION_PREFIX) and option not in PERMISSION_OPTIONS):
            raise CredentialsError(f"{where}: unknown option {option!r}; permissions are given with "
                                   f"{', '.join(sorted(PERMISSION_OPTIONS))} (group-name patterns, comma-separated)")
    given = {PERMISSION_OPTIONS[o]: items[o] for o in names if o in PERMISSION_OPTIONS}
    if not given:
        return Permissions.everything()
    grants: dict[Action, list[str]] = {}
    for action, text in given.items():
        patterns = [p for p in _SEPARATORS.split(text.strip()) if p]
        grants[action] = patterns
    try:
        return Permissions.of(grants)
    except PatternError as exc:
        raise CredentialsError(f"{where}: {exc}") from None


def parse_credentials(text: str, source: str = "credentials file") -> dict[str, AccessKey]:
    """Parse the AWS shared-credentials format: any number of sections, each with
    ``aws_access_key_id`` and ``aws_secret_access_key``, optionally permissions.
    Returns {access key id: AccessKey}."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise CredentialsError(f"{source}: not in the AWS credentials format ([profile] then "
                               f"aws_access_key_id = ... and aws_secret_access_key = ...): {exc}") from None
    keys: dict[str, AccessKey] = {}
    for section in parser.sections():
        items = parser[section]
        key, secret = items.get("aws_access_key_id"), items.get("aws_secret_access_key")
        if not key or not secret:
            missing = "aws_access_key_id" if not key else "aws_secret_access_key"
            raise CredentialsError(f"{source}: section [{section}] has no {missing}")
        key = key.strip()
        access = AccessKey(secret.strip(), _permissions(items, f"{source}: section [{section}]"))
        if keys.get(key, access) != access:
            # Two sections giving one key different secrets or permissions: which one applies
            # would depend on the order of sections, so neither is guessed.
            raise CredentialsError(f"{source}: access key {key!r} appears in two sections that disagree "
                                   f"(section [{section}] and an earlier one); give each key once")
        keys[key] = access
    if not keys:
        raise CredentialsError(f"{source}: no [profile] section with aws_access_key_id and aws_secret_access_key")
    return keys


def load_credentials(path: str) -> dict[str, AccessKey]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_000_000)
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None
    return parse_credentials(text, path)


__all__ = ["AccessKey", "ApiError", "CredentialsError", "load_credentials", "parse_credentials"]
