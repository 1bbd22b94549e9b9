"""The models registry: evaluation targets and their (encrypted) API keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from aieval_engine.dify import TEST_USER, DifyError, send_chat_message
from aieval_engine.netpolicy import OutboundPolicyError, check_url_form, guarded_client
from aieval_engine.spec import DifyModelSpec, HuggingFaceModelSpec, OpenAIModelSpec, SpecError, parse_spec

from .. import keyring
from ..config import Settings
from ..enums import AuditAction, AuditTarget, Visibility
from ..models import Evaluation, EvaluationModel, Model
from ..schemas.api import ModelCreate, ModelRead, ModelTestResult, ModelUpdate
from . import access, audit
from .accounts import Caller
from .errors import Conflict, Invalid

# Kinds the engine can evaluate (every kind that can be registered).
EVALUABLE_KINDS = ("openai", "dify", "huggingface")
_SETTINGS_FIELDS = {"openai": ("base_url", "model"), "dify": ("base_url",), "huggingface": ("path", "mode")}


def to_read(model: Model, caller: Caller) -> ModelRead:
    return ModelRead(
        **access.owned_fields(caller, model),
        id=model.id,
        name=model.name,
        kind=model.kind,
        settings=dict(model.settings or {}),
        has_api_key=model.api_key_encrypted is not None,
        api_key_hint=keyring.shown_hint(model.api_key_hint),
        is_demo=model.is_demo,
        max_concurrency=model.max_concurrency,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def engine_spec(
    model: Model, settings: Settings, *, with_key: bool = False
) -> OpenAIModelSpec | DifyModelSpec | HuggingFaceModelSpec:
    """The engine's model spec for a registered model; the API key only when `with_key` (worker side).

    The server's rules for what a model may make a worker do are checked again here, on every use: the row may
    predate them, and the folders it names may have changed since it was saved."""
    values = _check_server_rules(settings, model.settings or {}, f"model {model.name!r} cannot be used here")
    data: dict[str, Any] = {"name": model.name, "kind": model.kind, **values}
    if model.kind in ("openai", "dify"):
        # Set here, never from the row's settings: every job using this row, on any worker, shares one cap (the
        # engine's budget.py); the key is the row's, so a renamed model keeps its budget.
        data["shared_budget"] = (
            {"key": f"{settings.key_prefix}budget:model:{model.id}", "max_concurrency": model.max_concurrency}
            if model.max_concurrency and model.id is not None else None
        )
    if with_key and model.api_key_encrypted:
        data["api_key"] = keyring.decrypt(settings, model.api_key_encrypted)
    try:
        spec = parse_spec({"models": [data], "datasets": [{"kind": "builtin", "config": "x"}]})
    except SpecError as exc:
        prefix = f"models.0.{model.kind}."
        raise Invalid(f"model {model.name!r} cannot be used", [p.removeprefix(prefix) for p in exc.problems]) from None
    return spec.models[0]


# ---- what a model registered through the API may make a worker do (docs/SECURITY.md) ----------------
LOCAL_PATH_FIELDS = ("path", "tokenizer_path")


def under_model_roots(value: str, roots: list[Path]) -> Path | None:
    """The folder `value` names, resolved (symlinks followed), when it lies under one of the roots; else None."""
    try:
        path = Path(value)
        resolved = path.resolve() if path.is_absolute() else None
    except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
        return None
    if resolved is None or not any(resolved.is_relative_to(root) for root in roots):
        return None
    return resolved


def _check_server_rules(settings: Settings, values: dict[str, Any], refusal: str) -> dict[str, Any]:
    """Refuse what would let an API caller use the worker's own environment, folders or code execution; return
    the values with local paths resolved (the run then uses exactly the folder that was checked).

    The engine allows all of it to the person who owns the machine (`aieval run`); the server only where an
    administrator said so in the settings. A path outside the roots gets the same message whether or not it
    exists, so the answer reveals nothing about the server's folders."""
    values = dict(values)
    problems = []
    if values.get("api_key_env") is not None and values["api_key_env"] not in settings.model_key_env_allowlist:
        problems.append("api_key_env: the server stores keys encrypted: give the key as api_key (a model registered "
                        "here may not make the worker read its own environment variables; an administrator can "
                        "allow names with AIEVAL_MODEL_KEY_ENV_ALLOWLIST)")
    roots = settings.checkpoint_roots
    for field in LOCAL_PATH_FIELDS:
        if isinstance(values.get(field), str):
            resolved = under_model_roots(values[field], roots)
            if resolved is None:
                problems.append(f"{field}: must be an absolute path to a folder under the model roots "
                                f"({', '.join(map(str, roots))}); an administrator sets them with AIEVAL_MODEL_ROOTS")
            else:
                values[field] = str(resolved)
    if values.get("trust_remote_code") not in (None, False) and not settings.allow_remote_code_models:
        problems.append("trust_remote_code: running a checkpoint's own Python code is turned off on this server; an "
                        "administrator can allow it with AIEVAL_ALLOW_REMOTE_CODE_MODELS=true")
    if problems:
        raise Invalid(refusal, problems)
    return values


def _validate(settings: Settings, name: str, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check a model's settings with the engine's own rules and the server's; return the settings to store."""
    required = {"openai": ("base_url", "model"), "dify": ("base_url",), "huggingface": ("path",)}[kind]
    what = {"dify": "a Dify app, e.g. https://api.dify.ai/v1"}.get(kind, f"a {kind} model")
    missing = [f"{field}: required for {what}" for field in required if not values.get(field)]
    if missing:
        raise Invalid("this model cannot be saved", missing)
    _check_server_rules(settings, values, "this model cannot be saved")
    try:
        spec = parse_spec({"models": [{"name": name, "kind": kind, **values}], "datasets": [{"kind": "builtin", "config": "x"}]})
    except SpecError as exc:
        prefix = f"models.0.{kind}."
        raise Invalid("this model cannot be saved", [p.removeprefix(prefix) for p in exc.problems]) from None
    dumped = spec.models[0].model_dump(mode="json", exclude={"name", "kind", "api_key"}, exclude_defaults=True)
    for field in required:
        dumped[field] = getattr(spec.models[0], field)
    return dumped


def _values_from(body: ModelCreate | ModelUpdate, kind: str, current: dict[str, Any]) -> dict[str, Any]:
    values = dict(current)
    if body.options is not None:
        values = {k: v for k, v in values.items() if k in _SETTINGS_FIELDS[kind]}
        values.update(body.options)
    for field in ("base_url", "model", "path", "mode"):
        value = getattr(body, field)
        if value is not None:
            if field not in _SETTINGS_FIELDS[kind]:
                raise Invalid("this model cannot be saved", [f"{field}: not a setting of {kind} models"])
            values[field] = value
    return values


def unsaved(settings: Settings, body: ModelCreate) -> Model:
    """The model a create body describes, checked by the same rules, not added to the database (for the connection
    test before saving)."""
    if body.api_key is not None and body.api_key.get_secret_value() and body.kind == "huggingface":
        raise Invalid("this model cannot be saved", ["api_key: local Hugging Face models take no API key"])
    values = _validate(settings, body.name, body.kind, _values_from(body, body.kind, {}))
    model = Model(name=body.name, kind=body.kind, settings=values)
    if body.api_key is not None and body.api_key.get_secret_value():
        secret = body.api_key.get_secret_value()
        model.api_key_encrypted = keyring.encrypt(settings, secret)
        model.api_key_hint = keyring.hint(secret)
    return model


def create(session: Session, settings: Settings, body: ModelCreate, caller: Caller, *,
           is_demo: bool = False) -> Model:
    access.require_member(caller)
    model = unsaved(settings, body)
    owner = ({"owner_id": None, "visibility": Visibility.shared.value} if is_demo
             else access.ownership(caller, body.visibility, settings.default_visibility))
    model.owner_id, model.visibility = owner["owner_id"], owner["visibility"]
    model.is_demo, model.max_concurrency = is_demo, body.max_concurrency or None
    _ensure_unique_name(session, body.name)
    session.add(model)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a model named {body.name!r} already exists") from None
    audit.record(session, caller, AuditAction.created, AuditTarget.model, model.id, model.name,
                 {"kind": model.kind, "visibility": model.visibility})
    return model


def _ensure_unique_name(session: Session, name: str, exclude_id: int | None = None) -> None:
    query = select(Model.id).where(func.lower(Model.name) == name.lower())
    if exclude_id is not None:
        query = query.where(Model.id != exclude_id)
    if session.scalar(query) is not None:
        raise Conflict(f"a model named {name!r} already exists; choose another name")


def get(session: Session, model_id: int, caller: Caller) -> Model:
    """The model if the caller may read it (NotFound otherwise, as if there were none)."""
    return access.readable(caller, session.get(Model, model_id), "model", model_id)


def get_changeable(session: Session, model_id: int, caller: Caller) -> Model:
    return access.changeable(caller, session.get(Model, model_id), "model", model_id)


def list_models(session: Session, caller: Caller, kind: str | None = None, q: str | None = None,
                scope: access.ListScope = "all") -> list[Model]:
    query = (select(Model).where(access.readable_clause(caller, Model, scope)).order_by(Model.name)
             .options(selectinload(Model.owner)))
    if kind:
        query = query.where(Model.kind == kind)
    if q:
        query = query.where(Model.name.ilike(f"%{q}%"))
    return list(session.scalars(query))


def update(session: Session, settings: Settings, model_id: int, body: ModelUpdate, caller: Caller) -> Model:
    model = get_changeable(session, model_id, caller)
    changed = sorted(body.model_fields_set - {"api_key", "clear_api_key"})
    name = body.name or model.name
    if body.name:
        _ensure_unique_name(session, body.name, exclude_id=model.id)
    values = _validate(settings, name, model.kind, _values_from(body, model.kind, dict(model.settings or {})))
    model.name = name
    model.settings = values
    if body.clear_api_key:
        model.api_key_encrypted = model.api_key_hint = None
    if body.api_key is not None and body.api_key.get_secret_value():
        if model.kind == "huggingface":
            raise Invalid("this model cannot be saved", ["api_key: local Hugging Face models take no API key"])
        secret = body.api_key.get_secret_value()
        model.api_key_encrypted = keyring.encrypt(settings, secret)
        model.api_key_hint = keyring.hint(secret)
    if body.visibility is not None:
        model.visibility = body.visibility.value
    if body.max_concurrency is not None:
        model.max_concurrency = body.max_concurrency or None
    session.flush()
    key_changed = ["api_key"] if body.clear_api_key or (body.api_key and body.api_key.get_secret_value()) else []
    audit.record(session, caller, AuditAction.updated, AuditTarget.model, model.id, model.name,
                 {"fields": changed + key_changed})  # which fields, never their values (keys)
    return model


def delete(session: Session, model_id: int, caller: Caller) -> None:
    model = get_changeable(session, model_id, caller)
    used = session.scalar(select(func.count()).select_from(EvaluationModel).where(EvaluationModel.model_id == model_id))
    if used:
        raise Conflict(f"model {model.name!r} is used by {used} evaluation(s); delete those evaluations first")
    judging = session.scalar(select(func.count()).select_from(Evaluation).where(Evaluation.judge_model_id == model_id))
    if judging:
        raise Conflict(f"model {model.name!r} is the judge of {judging} evaluation(s); delete those evaluations first")
    audit.record(session, caller, AuditAction.deleted, AuditTarget.model, model.id, model.name)
    session.delete(model)
    session.flush()


# ---- connectivity test --------------------------------------------------------------------------
def _describe_http_error(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {exc}"
    return f"{type(exc).__name__}: {exc}"


def test_model(model: Model, settings: Settings) -> ModelTestResult:
    """Send one short request and report latency or the exact error (keys never appear in the result)."""
    api_key = keyring.decrypt(settings, model.api_key_encrypted) if model.api_key_encrypted else None
    if model.kind == "huggingface":
        return _test_checkpoint(model, settings)
    if model.kind == "dify":  # the engine's own request, exactly as evaluations send it
        return _test_dify(model, settings, api_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{model.settings['base_url'].rstrip('/')}/chat/completions"
    body = {"model": model.settings["model"], "messages": [{"role": "user", "content": "Reply with OK."}],
            "max_tokens": 8, "temperature": 0}
    started = time.perf_counter()
    try:
        # The outbound policy is applied when connecting (after DNS, to the address it checked); redirects are
        # not followed: a model's base URL must be the API's own address.
        check_url_form(url)
        with guarded_client(settings.outbound_policy, timeout=settings.model_test_timeout_s) as client:
            response = client.post(url, json=body, headers=headers)
    except OutboundPolicyError as exc:
        return ModelTestResult(ok=False, error=f"{exc} (tried {url})")
    except httpx.HTTPError as exc:  # every failure names the address tried, so a typo in it is easy to see
        return ModelTestResult(ok=False, error=_redact(f"{_describe_http_error(exc)} (tried {url})", api_key))
    latency = (time.perf_counter() - started) * 1000
    if response.is_redirect:
        return ModelTestResult(ok=False, latency_ms=latency, error=_redact(
            f"HTTP {response.status_code} from {url}: redirects to {response.headers.get('location', '?')}; "
            "give the final address as the base URL (redirects are not followed)", api_key))
    if response.status_code >= 400:
        return ModelTestResult(ok=False, latency_ms=latency,
                               error=_redact(f"HTTP {response.status_code} from {url}: {response.text[:500]}", api_key))
    try:
        reply = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ModelTestResult(ok=False, latency_ms=latency,
                               error=_redact(f"unexpected response from {url}: {response.text[:500]}", api_key))
    return ModelTestResult(ok=True, latency_ms=latency, reply=str(reply)[:500])


def _test_dify(model: Model, settings: Settings, api_key: str | None) -> ModelTestResult:
    spec = engine_spec(model, settings)
    assert isinstance(spec, DifyModelSpec)
    started = time.perf_counter()
    try:
        with guarded_client(settings.outbound_policy) as client:
            reply = send_chat_message(spec.base_url, "Reply with OK.", api_key, inputs=spec.inputs, user=TEST_USER,
                                      timeout=settings.model_test_timeout_s, client=client)
    except DifyError as exc:
        latency = (time.perf_counter() - started) * 1000 if exc.status is not None else None
        message = str(exc) if spec.base_url in str(exc) else f"{exc} (tried {spec.base_url})"
        return ModelTestResult(ok=False, latency_ms=latency, error=_redact(message, api_key))
    return ModelTestResult(ok=True, latency_ms=(time.perf_counter() - started) * 1000, reply=reply.answer[:500])


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "****") if secret else text


def _test_checkpoint(model: Model, settings: Settings) -> ModelTestResult:
    """Load the checkpoint's config and tokenizer, only under the model roots and never running its own code
    (this is the API process)."""
    started = time.perf_counter()
    try:
        spec = engine_spec(model, settings)
    except Invalid as exc:  # outside the roots: the same answer whether the folder exists or not
        return ModelTestResult(ok=False, error="; ".join([exc.message, *exc.problems]))
    assert isinstance(spec, HuggingFaceModelSpec)
    path = Path(spec.path)
    if not (path / "config.json").is_file():
        return ModelTestResult(ok=False, error=f"no Hugging Face checkpoint at {path} (config.json missing)")
    try:
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_path or path, local_files_only=True,
                                                  trust_remote_code=False)
        tokens = tokenizer("Reply with OK.")["input_ids"]
    except Exception as exc:  # transformers raises many types for broken checkpoints
        return ModelTestResult(ok=False, error=f"cannot load {path}: {type(exc).__name__}: {exc}")
    latency = (time.perf_counter() - started) * 1000
    arch = ",".join(getattr(config, "architectures", None) or [config.model_type])
    return ModelTestResult(ok=True, latency_ms=latency, reply=f"checkpoint {arch}; tokenizer OK ({len(tokens)} tokens)")
