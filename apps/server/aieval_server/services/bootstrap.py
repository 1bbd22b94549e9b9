"""First start: the database schema, the demo model and the demo datasets, so a new user can run at once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..db import session_scope
from ..db.migrate import upgrade
from ..enums import DemoModelState
from ..models import Dataset, Model
from ..private_paths import private_dir
from ..storage import get_storage
from . import datasets as dataset_service
from .accounts import SYSTEM_CALLER
from .errors import ServiceError
from .models import under_model_roots

log = logging.getLogger(__name__)


def protect_data_dir(settings: Settings) -> None:
    """The data dir, local storage and job dirs readable by this user only (see private_paths)."""
    private_dir(settings.data_dir)
    private_dir(settings.jobs_dir)
    if settings.storage == "local":
        private_dir(settings.local_storage_dir)


def prepare_database(settings: Settings) -> None:
    protect_data_dir(settings)
    if settings.auto_migrate:
        upgrade(settings.database_url)
    create_initial_admin(settings)


def create_initial_admin(settings: Settings) -> None:
    """AIEVAL_INITIAL_ADMIN_USERNAME + _PASSWORD: the first administrator (once, when there is no admin). A
    password the account rules refuse stops the start with the reason (the password itself is never shown)."""
    from ..config import NotProductionReady
    from .accounts import ensure_initial_admin

    try:
        ensure_initial_admin(settings)
    except ServiceError as exc:
        raise NotProductionReady(f"AIEVAL_INITIAL_ADMIN_USERNAME/AIEVAL_INITIAL_ADMIN_PASSWORD: {exc.message}") from None


def register_demo(settings: Settings) -> None:
    """Register the demo model and datasets once (idempotent, safe when API and worker race)."""
    from aieval_engine.demo import DEMO_MODEL_NAME, demo_model_dir

    storage = get_storage(settings)
    demo_dir = demo_model_dir(settings.data_dir)
    # Registered directly (its folder is filled later, in the background), so the model roots are checked here.
    demo_runnable = under_model_roots(str(demo_dir), settings.checkpoint_roots) is not None
    if not demo_runnable:
        log.warning("the demo model is not registered: %s is outside the model roots (AIEVAL_MODEL_ROOTS: %s)",
                    demo_dir, ", ".join(map(str, settings.checkpoint_roots)))
    with session_scope(settings.database_url) as session:
        if demo_runnable and session.scalar(select(Model.id).where(Model.is_demo.is_(True))) is None:
            session.add(Model(name=DEMO_MODEL_NAME, kind="huggingface", is_demo=True,
                              settings={"path": str(demo_dir), "mode": "chat"}))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
    for path, name, scorer in dataset_service.demo_files():
        with session_scope(settings.database_url) as session:
            if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
                continue
            try:
                with open(path, "rb") as handle:
                    dataset_service.upload(session, settings, storage, SYSTEM_CALLER, handle, path.name, name, None,
                                           scorer, "gen", is_demo=True)
            except (ServiceError, IntegrityError) as exc:
                log.warning("demo dataset %s not registered: %s", name, exc)
                session.rollback()


def _demo_model_failed_marker(settings: Settings) -> Path:
    """Written by the worker when the conversion fails, so that the API (another process) can tell "failed" from
    "still converting"; removed when a conversion starts."""
    from aieval_engine.demo import DEMO_MODEL_DIRNAME, demo_model_dir

    return demo_model_dir(settings.data_dir).parent / f".{DEMO_MODEL_DIRNAME}.failed"


def demo_model_state(settings: Settings) -> DemoModelState:
    """What GET /health reports about the demo model (the UI says "being prepared" until it is ready)."""
    from aieval_engine.demo import demo_model_dir, demo_model_ready

    if not settings.register_demo or under_model_roots(str(demo_model_dir(settings.data_dir)),
                                                       settings.checkpoint_roots) is None:
        return DemoModelState.off
    if demo_model_ready(settings.data_dir):
        return DemoModelState.ready
    if not settings.prepare_demo_model or _demo_model_failed_marker(settings).exists():
        return DemoModelState.unavailable
    return DemoModelState.preparing


def _quiet_conversion():
    """transformers' progress bars and notes while it converts the GGUF file are not for the console (they would
    show up as warnings of the worker); its errors still reach the log."""
    import contextlib

    from transformers.utils import logging as transformers_logging

    @contextlib.contextmanager
    def quiet():
        import functools

        from transformers import modeling_gguf_pytorch_utils as gguf_loading

        verbosity = transformers_logging.get_verbosity()
        bars = transformers_logging.is_progress_bar_enabled()
        # The GGUF loader's "Converting and de-quantizing GGUF tensors" bar is a plain tqdm, which no transformers
        # setting turns off; nothing else in the worker process loads GGUF files.
        gguf_tqdm = getattr(gguf_loading, "tqdm", None)
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        if gguf_tqdm is not None:
            gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
        try:
            yield
        finally:
            transformers_logging.set_verbosity(verbosity)
            if bars:
                transformers_logging.enable_progress_bar()
            if gguf_tqdm is not None:
                gguf_loading.tqdm = gguf_tqdm

    return quiet()


def prepare_demo_model_in_background(settings: Settings) -> threading.Thread:
    """Convert the demo model (about a minute, once) without delaying the start."""

    def convert() -> None:
        from aieval_engine.demo import DemoModelUnavailable, demo_model_ready, prepare_demo_model

        marker = _demo_model_failed_marker(settings)
        marker.unlink(missing_ok=True)  # this start tries again
        if demo_model_ready(settings.data_dir):
            return
        log.info("preparing the demo model (about a minute, once)")
        try:
            with _quiet_conversion():
                path = prepare_demo_model(settings.data_dir)
            log.info("demo model ready at %s", path)
        except DemoModelUnavailable as exc:
            _write_marker(marker, str(exc))
            log.warning("demo model unavailable: %s", exc)
        except Exception as exc:
            _write_marker(marker, f"{type(exc).__name__}: {exc}")
            log.exception("demo model preparation failed")

    thread = threading.Thread(target=convert, daemon=True, name="aieval-demo-model")
    thread.start()
    return thread


def _write_marker(marker: Path, reason: str) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(reason + "\n")
    except OSError as exc:  # the state then stays "preparing"; the log has the reason
        log.warning("could not record the demo model's failure in %s: %s", marker, exc)
