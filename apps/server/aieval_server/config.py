"""One settings object for the whole server.

Layers, lowest first: defaults here < configs/environments/<AIEVAL_ENV>.yaml < `.env` < environment variables
(prefix AIEVAL_, e.g. AIEVAL_DB_URL). Environments differ only by these values, never by code paths.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def environment_file() -> Path:
    folder = Path(os.environ.get("AIEVAL_CONFIG_DIR") or REPO_ROOT / "configs" / "environments")
    return folder / f"{os.environ.get('AIEVAL_ENV', 'dev')}.yaml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIEVAL_", env_file=".env", extra="ignore")

    env: str = "dev"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "aieval")
    # Empty means SQLite at <data_dir>/aieval.db. PostgreSQL: postgresql+psycopg://user@host/db
    db_url: str = ""
    # Empty means a broker needing no server: a directory queue under <data_dir>/broker.
    broker_url: str = ""
    # Redis for live events (pub/sub); empty means subscribers poll the database.
    redis_url: str = ""
    # Prefix of every Redis key and channel (lets several installations or test runs share one Redis).
    key_prefix: str = ""
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None  # local storage root; default <data_dir>/storage
    s3_endpoint_url: str | None = None
    s3_bucket: str = "aieval"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    # Fernet key encrypting API keys at rest. Empty: a key generated once into <data_dir>/secret.key.
    secret_key: SecretStr | None = None
    auto_migrate: bool = True
    register_demo: bool = True
    # Convert the demo model on worker start (about a minute of CPU, once per data dir).
    prepare_demo_model: bool = True
    max_upload_bytes: int = 50 * 1024 * 1024
    heartbeat_interval_s: float = 2.0
    # A running job whose heartbeat is older than this is considered orphaned and requeued.
    stale_after_s: float = 15.0
    # A queued job not picked up for this long is sent to the broker again (a broker restart may lose it).
    resend_queued_after_s: float = 600.0
    # A new job's message is sent right after its row commits; one still unsent after this long was lost with
    # the API process (killed between the two) and the sweeper sends it.
    unsent_grace_s: float = 10.0
    sweep_interval_s: float = 5.0
    # A running job's files are copied to shared storage this often, so that a worker on another machine can
    # resume it (0: only at the end).
    checkpoint_interval_s: float = 30.0
    # Where HF checkpoints registered as models are checked at submit time (API and worker share disks).
    check_model_paths: bool = True
    web_dist: Path = REPO_ROOT / "apps" / "web" / "dist"
    cors_origins: list[str] = []
    log_level: str = "INFO"
    worker_queues: list[str] = ["api", "local"]
    worker_concurrency: int = 1
    model_test_timeout_s: float = 30.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=environment_file())
        return init_settings, env_settings, dotenv_settings, yaml_source

    @field_validator("data_dir", "storage_dir", "web_dist", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    # ---- derived values -----------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'aieval.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def local_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def jobs_dir(self) -> Path:
        """Where workers run jobs (local disk); artifacts are copied to storage when a run ends."""
        return self.data_dir / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def compass_data_cache(self) -> Path:
        return Path(os.environ.get("COMPASS_DATA_CACHE") or self.data_dir / "compass")

    def public_summary(self) -> dict[str, Any]:
        """What health reports: no URLs with credentials, no keys."""
        return {
            "env": self.env,
            "database": self.database_url.split(":", 1)[0],
            "broker": self.celery_broker_url.split(":", 1)[0],
            "events": "redis" if self.redis_url else "database-polling",
            "storage": self.storage,
        }


@functools.cache
def get_settings() -> Settings:
    return Settings()
