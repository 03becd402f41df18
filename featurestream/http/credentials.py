"""Access keys the server accepts: the configured pair plus any from an AWS-style credentials file."""

from __future__ import annotations

import configparser

from featurestream.http.errors import ApiError


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message names the file, section and key."""


def parse_credentials(text: str, source: str = "credentials file") -> dict[str, str]:
    """Parse the AWS shared-credentials format: any number of sections, each with
    ``aws_access_key_id`` and ``aws_secret_access_key``. Returns {access key: secret}."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise CredentialsError(f"{source}: not in the AWS credentials format ([profile] then "
                               f"aws_access_key_id = ... and aws_secret_access_key = ...): {exc}") from None
    keys: dict[str, str] = {}
    for section in parser.sections():
        items = parser[section]
        key, secret = items.get("aws_access_key_id"), items.get("aws_secret_access_key")
        if not key or not secret:
            missing = "aws_access_key_id" if not key else "aws_secret_access_key"
            raise CredentialsError(f"{source}: section [{section}] has no {missing}")
        keys[key.strip()] = secret.strip()
    if not keys:
        raise CredentialsError(f"{source}: no [profile] section with aws_access_key_id and aws_secret_access_key")
    return keys


def load_credentials(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_000_000)
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None
    return parse_credentials(text, path)


__all__ = ["ApiError", "CredentialsError", "load_credentials", "parse_credentials"]
