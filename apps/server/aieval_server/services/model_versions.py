"""Which version of its model an OpenAI-compatible endpoint serves: what a schedule with the new_model_version
trigger watches (services/schedules.check_model_versions).

The endpoint is asked `GET {base_url}/models` (the OpenAI list of models, which vLLM, SGLang and most servers
answer) with the model's API key, through the outbound policy, like the connection test. The version of the served
model is its entry's `id` and `created` (the time the server loaded it: a redeployment changes it), with the extras
vLLM and SGLang add when present (`root`: the checkpoint it was loaded from, `max_model_len`, `owned_by`). A
schedule's fingerprint is that of each of its endpoint models, as canonical JSON: equal text, same versions.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from aieval_engine.netpolicy import OutboundPolicyError, check_url_form, guarded_client

from .. import keyring
from ..config import Settings
from ..enums import ModelVersionChange
from ..models import Model
from .models import _describe_http_error, _redact

ENDPOINT_KIND = "openai"  # the models whose endpoints list their models (Dify apps and checkpoints do not)
VERSION_FIELDS = ("id", "created", "root", "max_model_len", "owned_by")
LISTED_IN_ERRORS = 10


class VersionCheckError(Exception):
    """Why an endpoint's version could not be read (says which endpoint; never holds its key)."""


def fingerprint(listing: Any, served_name: str, where: str = "the endpoint") -> dict[str, Any]:
    """The version of `served_name` in a GET /models answer: the fields of its entry that a redeployment changes."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        raise VersionCheckError(f"{where} did not answer an OpenAI list of models ({{\"data\": [...]}})")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") == served_name:
            return {field: entry[field] for field in VERSION_FIELDS if entry.get(field) is not None}
    listed = [str(entry.get("id")) for entry in entries if isinstance(entry, dict)][:LISTED_IN_ERRORS]
    raise VersionCheckError(f"{where} does not serve model {served_name!r} (it lists {', '.join(listed) or 'none'})")


def version_text(versions: dict[int, dict[str, Any]]) -> str:
    """A schedule's fingerprint: each endpoint model's version by model id, as canonical JSON."""
    return json.dumps({str(model_id): version for model_id, version in versions.items()}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def decide(recorded: str | None, observed: str) -> ModelVersionChange:
    """The first version seen is only recorded: a schedule made today does not run because its model exists."""
    if recorded is None:
        return ModelVersionChange.first_seen
    return ModelVersionChange.unchanged if recorded == observed else ModelVersionChange.changed


def endpoint_models(session: Session, model_ids: list[int]) -> list[Model]:
    """The OpenAI-compatible endpoint models among a request's models (the evaluated ones, not the judge)."""
    if not model_ids:
        return []
    return list(session.scalars(select(Model).where(Model.id.in_(model_ids), Model.kind == ENDPOINT_KIND)
                                .order_by(Model.id)))


def served_version(settings: Settings, base_url: str, served_name: str, api_key_encrypted: str | None) -> dict:
    """Ask the endpoint which version of `served_name` it serves. VersionCheckError saying why not."""
    api_key = keyring.decrypt(settings, api_key_encrypted) if api_key_encrypted else None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{base_url.rstrip('/')}/models"
    try:
        check_url_form(url)
        # Redirects are not followed, as for the connection test: the base URL is the API's own address.
        with guarded_client(settings.outbound_policy, timeout=settings.model_test_timeout_s) as client:
            response = client.get(url, headers=headers)
    except OutboundPolicyError as exc:
        raise VersionCheckError(f"{exc} (tried {url})") from None
    except httpx.HTTPError as exc:
        raise VersionCheckError(_redact(f"{_describe_http_error(exc)} (tried {url})", api_key)) from None
    if response.status_code != 200:
        raise VersionCheckError(_redact(f"HTTP {response.status_code} from {url}: {response.text[:300]}", api_key))
    try:
        listing = response.json()
    except ValueError:
        raise VersionCheckError(_redact(f"{url} did not answer JSON: {response.text[:300]}", api_key)) from None
    return fingerprint(listing, served_name, url)
