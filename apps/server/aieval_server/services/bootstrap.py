"""First start: the database schema, the demo model and the demo datasets, so a new user can run at once."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..db import session_scope
from ..db.migrate import upgrade
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


def prepare_demo_model_in_background(settings: Settings) -> threading.Thread:
    """Convert the demo model (about a minute, once) without delaying the start."""

    def convert() -> None:
        from aieval_engine.demo import DemoModelUnavailable, prepare_demo_model

        try:
            path = prepare_demo_model(settings.data_dir)
            log.info("demo model ready at %s", path)
        except DemoModelUnavailable as exc:
            log.warning("demo model unavailable: %s", exc)
        except Exception:
            log.exception("demo model preparation failed")

    thread = threading.Thread(target=convert, daemon=True, name="aieval-demo-model")
    thread.start()
    return thread
