"""Secrets in the configuration API are write-only.

`GET /api/v1/config` shows every secret (recorder tokens, camera passwords and the passwords in
camera URLs, credential tokens) as REDACTED. A `PUT` may send REDACTED back where the same
recorder, camera or credential has a stored secret, which is then kept: a client can read,
change one thing and write back without ever holding a secret.
"""

from __future__ import annotations

from collections.abc import Iterator

from gapless.common.config import ConfigError
from gapless.common.urls import with_password
from gapless.config.cluster import ClusterDocument

REDACTED = "<redacted>"


def _password_marked(url: str) -> str:
    return with_password(url, REDACTED)


def _secrets(document: dict) -> Iterator[tuple[str, dict, str]]:
    """(where, the object holding it, its field) for every secret of a document in JSON form;
    tolerant of malformed input (validation comes after)."""

    def objects(items: object) -> list[dict]:
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    for recorder in objects(document.get("recorders")):
        yield f"recorders.{recorder.get('id')}", recorder, "token"
        for camera in objects(recorder.get("cameras")):
            yield f"recorders.{recorder.get('id')}.cameras.{camera.get('id')}", camera, "password"
            yield f"recorders.{recorder.get('id')}.cameras.{camera.get('id')}", camera, "url"
    for credential in objects(document.get("credentials")):
        yield f"credentials.{credential.get('id')}", credential, "token"
    for cluster in objects(document.get("clusters")):
        for camera in objects(cluster.get("cameras")):
            yield f"cameras.{camera.get('id')}", camera, "password"
            yield f"cameras.{camera.get('id')}", camera, "url"


def _stored_secrets(document: ClusterDocument) -> dict[tuple[str, str], str]:
    data = document.model_dump(mode="json")
    for credential in data["credentials"]:
        credential["token"] = credential.pop("token_sha256")
    return {(where, name): holder[name] for where, holder, name in _secrets(data) if holder.get(name) is not None}


def redact(document: ClusterDocument) -> dict:
    data = document.model_dump(mode="json")
    for credential in data["credentials"]:
        del credential["token_sha256"]
        credential["token"] = REDACTED
    for _where, holder, name in _secrets(data):
        value = holder.get(name)
        if value is not None:
            holder[name] = _password_marked(value) if name == "url" else REDACTED
    return data


def restore(raw: dict, stored: ClusterDocument | None) -> dict:
    """`raw` (a PUT body, changed in place) with every REDACTED secret replaced by the stored one."""
    known = _stored_secrets(stored) if stored is not None else {}
    for where, holder, name in _secrets(raw):
        value = holder.get(name)
        if not isinstance(value, str) or REDACTED not in value:
            continue
        kept = known.get((where, name))
        if kept is None or (name == "url" and value != _password_marked(kept)) or (name != "url" and value != REDACTED):
            raise ConfigError(
                f"config: {where}.{name} sends {REDACTED} back, but there is no such stored secret to keep;"
                " send the secret itself"
            )
        if where.startswith("credentials."):
            del holder["token"]
            holder["token_sha256"] = kept
        else:
            holder[name] = kept
    return raw
