"""One settings object for the whole server.

Layers, lowest first: defaults here < configs/environments/<AIEVAL_ENV>.yaml < `.env` < environment variables
(prefix AIEVAL_, e.g. AIEVAL_DB_URL). Environments differ only by these values, never by code paths.
"""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from aieval_engine.netpolicy import OutboundPolicy
from aieval_engine.spec import SlurmSpec

from .enums import UserRole, Visibility
from .security import normalize_origin, normalize_trusted_host

REPO_ROOT = Path(__file__).resolve().parents[3]


def environment_file() -> Path:
    folder = Path(os.environ.get("AIEVAL_CONFIG_DIR") or REPO_ROOT / "configs" / "environments")
    return folder / f"{os.environ.get('AIEVAL_ENV', 'dev')}.yaml"


GENERATE_SECRET_KEY_COMMAND = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class NotProductionReady(SystemExit):
    """Settings a production process must not start with; raised before it starts, it ends the process with
    its message (exit status 1)."""


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
    # Largest dataset file accepted; a bigger upload is refused (413) while it arrives, chunked or not.
    max_upload_bytes: int = 50 * 1024 * 1024
    # ---- data packages for built-in benchmarks (services/data_packages.py, docs/OPERATIONS.md "Data packages") --
    # Largest OpenCompass data package an administrator may upload (OpenCompassData-core-*.zip is ~0.5 GiB).
    max_data_package_bytes: int = 8 * 1024**3
    # Folders on this server whose archives and folders administrators may import by path (after resolving
    # symlinks). Empty: importing by path is off; uploads still work.
    data_import_roots: list[Path] = []
    heartbeat_interval_s: float = 2.0
    # A running job whose heartbeat is older than this is considered orphaned and requeued.
    stale_after_s: float = 15.0
    # A queued job not picked up for this long is sent to the broker again (a broker restart may lose it).
    resend_queued_after_s: float = 600.0
    # A new job's message is sent right after its row commits; one still unsent after this long was lost with
    # the API process (killed between the two) and the sweeper sends it.
    unsent_grace_s: float = 10.0
    sweep_interval_s: float = 5.0
    # How often schedules are looked at (services/schedules.tick: Celery beat's entry, `aieval serve`'s thread).
    schedule_tick_s: float = 30.0
    # How often the tick asks the endpoints of "new model version" schedules which model version they serve.
    schedule_version_check_s: float = 300.0
    # A running job's files are copied to shared storage this often, so that a worker on another machine can
    # resume it (0: only at the end).
    checkpoint_interval_s: float = 30.0
    # A job with several local checkpoints runs as parts on many workers, one checkpoint each (services/fanout.py).
    fanout: bool = True
    # A checkpoint's work is also cut into parts (groups of datasets, shards of a large uploaded one) while the job
    # has fewer parts on the `local` queue than this (about the GPU workers there are), each of at least
    # `fanout_part_rows` rows: a job of a few small datasets stays one part.
    fanout_max_parts: int = Field(default=4, ge=1, le=256)
    fanout_part_rows: int = Field(default=1000, ge=1)
    # Where HF checkpoints registered as models are checked at submit time (API and worker share disks).
    check_model_paths: bool = True
    web_dist: Path = REPO_ROOT / "apps" / "web" / "dist"
    # ---- who may talk to the server from a browser (enforced in security.py; docs/SECURITY.md) ----------------
    # Host names (any port) this server answers to: a request or WebSocket whose Host header names another host
    # gets 400, so a hostile DNS name pointed at this machine (DNS rebinding) reaches nothing. Loopback names by
    # default, for the embedded server; production lists the names people type, e.g.
    # AIEVAL_TRUSTED_HOSTS='["eval.example.com"]'. "*.example.com" matches subdomains; "*" turns the check off.
    trusted_hosts: list[str] = ["127.0.0.1", "localhost", "::1"]
    # Web origins (scheme://host[:port]) of other sites whose pages may use the API from a browser: their
    # state-changing requests and WebSockets pass the origin check, and they get CORS headers. The server's own
    # pages always may; other sites may not by default. (Replaces cors_origins: one list for one idea.)
    allowed_origins: list[str] = []
    log_level: str = "INFO"
    # console: short lines for a person, library chatter and per-file access lines left out. json: one JSON object
    # per line (timestamp, level, logger, message, request_id, evaluation_id) for a log collector
    # (log_config.py; docs/OPERATIONS.md "Logs").
    log_format: Literal["console", "json"] = "console"
    # ---- monitoring (metrics.py, docs/OPERATIONS.md "Monitoring") ---------------------------------------------
    # Where this machine's processes (API, workers) keep their Prometheus metrics files; empty: <data_dir>/metrics.
    # A local directory per machine (or container group), never shared storage.
    metrics_dir: Path | None = None
    # A bearer token Prometheus sends to GET /metrics (`authorization: {credentials: ...}` in its scrape config).
    # Without it, /metrics answers administrators only (their session or personal API token); with sign-in off, the
    # local user (loopback).
    metrics_token: SecretStr | None = None
    worker_queues: list[str] = ["api", "local"]
    worker_concurrency: int = 1
    # ---- where a worker's OpenCompass tasks run (docs/ARCHITECTURE.md "Tasks on a Slurm cluster") --------
    # local: processes on the worker's machine (OpenCompass' LocalRunner). slurm: every task an `srun` job (its
    # SlurmRunner); the nodes must see the data dir and this Python environment at the same paths as the worker.
    runner: Literal["local", "slurm"] = "local"
    slurm_partition: str | None = None
    slurm_qos: str | None = None
    slurm_quotatype: str | None = None
    # More srun arguments, split as a shell would ("--time=04:00:00 -c 8"); every token is checked (spec.SLURM_ARG).
    slurm_extra_args: str = ""
    slurm_retry: int = 2
    model_test_timeout_s: float = 30.0

    # ---- accounts and sign-in (issue 9; services/accounts.py, docs/SECURITY.md "Accounts and sign-in") --------
    # Off (embedded default): no sign-in, every caller is the single local user (role admin). On (prod.yaml):
    # every /api/v1 route except /health, /auth/login and /auth/me needs a session (cookie `aieval_session`),
    # and `aieval serve` may listen on other addresses than loopback.
    auth_enabled: bool = False
    # How long a sign-in lasts (seconds, from the sign-in; not extended by use).
    session_ttl_s: float = 8 * 3600
    # An API process keeps a looked-up session this long before reading it again (one indexed query per miss).
    # Sign-out, password changes and account changes take effect at once in the process that made them, and in
    # other API processes within this many seconds.
    session_cache_ttl_s: float = 5.0
    # Failed sign-ins allowed per account and per client address within the window before answering 429. Kept in
    # memory per API process: with several API processes, each counts on its own.
    login_failures_per_account: int = 10
    login_failures_per_address: int = 50
    login_failure_window_s: float = 900.0
    # The first administrator, created at start when there is no admin yet (the username is logged, the password
    # never). Set both, sign in, then remove the password from the environment. `aieval create-admin` does the same.
    initial_admin_username: str = ""
    initial_admin_password: SecretStr | None = None
    # Lets anyone who can reach the sign-in page make a member account (POST /auth/register). Off: administrators
    # create accounts (or single sign-on does, below).
    self_registration: bool = False
    # Who may read a model, dataset or evaluation a user creates without saying (services/access.py): "private"
    # (its owner and administrators) or "shared" (every signed-in user). The owner may change it later.
    default_visibility: Visibility = Visibility.private

    # ---- single sign-on with OpenID Connect (services/oidc.py; docs/SECURITY.md "Single sign-on") ---------------
    # On when an issuer is set: the sign-in page offers "Sign in with <oidc_display_name>"; an account is made
    # at the first sign-in (role oidc_default_role), matched later by (issuer, subject).
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid email profile"
    oidc_display_name: str = "SSO"
    oidc_default_role: UserRole = UserRole.member
    # The claim that becomes the username at the first sign-in (made unique and valid if it is not).
    oidc_username_claim: str = "preferred_username"

    # ---- quotas and scheduling (services/quotas.py, services/scheduling.py) ------------------------------------
    # Per-user limits unless an administrator set others on the account: evaluations queued or running at once
    # (429 above it) and bytes of uploaded datasets kept (403 above it). 0: no limit.
    default_max_active_evaluations: int = 20
    default_max_stored_bytes: int = 10 * 1024**3

    # ---- what models registered through the API may make a worker do (issue 8; docs/SECURITY.md) -------------
    # Environment variables a model registered through the API may name as `api_key_env` (the worker would read
    # the variable from its own environment and send it to the model's URL). Empty: none; such keys are given
    # as `api_key` and stored encrypted. Naming variables stays an engine/CLI feature (`aieval run`).
    model_key_env_allowlist: list[str] = []
    # Folders that local Hugging Face checkpoints (`path`, `tokenizer_path`) must lie under, after resolving
    # symlinks. Empty: <data_dir>/models, where the demo model is converted.
    model_roots: list[Path] = []
    # Lets models registered through the API set `trust_remote_code: true`, so that the worker runs the Python
    # files shipped in a checkpoint. Turning this on lets every API caller do it (per-role limits come later).
    allow_remote_code_models: bool = False
    # Outbound policy for model URLs (connection tests and evaluations; aieval_engine/netpolicy.py): link-local and
    # cloud metadata addresses are always refused; loopback and private ranges (10/8, 172.16/12, 192.168/16,
    # 100.64/10, fc00::/7) only where allowed here. Embedded default: allowed, so a local vLLM and the demo work;
    # production (prod.yaml) refuses both except for the networks listed, e.g. ["10.0.5.0/24", "192.168.1.20"].
    outbound_allow_loopback: bool = True
    outbound_allow_private: bool = True
    outbound_allow_networks: list[str] = []

    # ---- notifications (services/notifications.py, docs/OPERATIONS.md "Notifications") -------------------------
    # The address people open the UI at, for the links in notifications (e.g. https://eval.example.com); empty:
    # http://127.0.0.1:8000, the embedded server's.
    public_url: str = ""
    # Tries per notification before it is given up (a receiver answering 5xx or 429, or not reachable), waiting
    # notification_retry_wait_s, then 4 times longer after each failure (at most notification_retry_max_wait_s).
    notification_attempts: int = Field(default=5, ge=1, le=20)
    notification_retry_wait_s: float = Field(default=2.0, gt=0)
    notification_retry_max_wait_s: float = Field(default=300.0, gt=0)
    # How long one attempt may take (connecting and the receiver's answer).
    notification_timeout_s: float = Field(default=10.0, gt=0)

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

    @model_validator(mode="after")
    def _slurm_checked(self) -> Settings:
        self.slurm_spec()  # a bad partition or srun argument stops the process at start, not each job
        return self

    @field_validator("trusted_hosts", mode="after")
    @classmethod
    def _trusted_hosts(cls, value: list[str]) -> list[str]:
        return [normalize_trusted_host(host) for host in value]

    @field_validator("allowed_origins", mode="after")
    @classmethod
    def _allowed_origins(cls, value: list[str]) -> list[str]:
        return [normalize_origin(origin) for origin in value]

    @field_validator("data_dir", "storage_dir", "web_dist", "metrics_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("outbound_allow_networks", mode="after")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        OutboundPolicy.build(allow_loopback=False, allow_private=False, allow_networks=value)  # names a bad entry
        return value

    @field_validator("model_roots", "data_import_roots", mode="after")
    @classmethod
    def _resolved_roots(cls, value: list[Path]) -> list[Path]:
        return [root.expanduser().resolve() for root in value]

    # ---- derived values -----------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'aieval.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def budget_store(self) -> str:
        """Where models' shared request caps live (aieval_engine.budget): Redis when there is one (shared by every
        worker machine), else lock files under the data dir (shared by this machine's processes)."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return str(self.data_dir / "budget")

    def slurm_spec(self) -> SlurmSpec | None:
        """The engine's `params.slurm` for the runs of this worker (spec.SlurmSpec), None for local processes."""
        if self.runner != "slurm":
            return None
        try:
            extra_args = shlex.split(self.slurm_extra_args)
        except ValueError as exc:
            raise ValueError(f"AIEVAL_SLURM_EXTRA_ARGS: {exc}") from None
        try:
            spec = SlurmSpec(partition=self.slurm_partition, qos=self.slurm_qos, quotatype=self.slurm_quotatype,
                             extra_args=extra_args, retry=self.slurm_retry)
        except ValidationError as exc:
            raise ValueError("; ".join(f"AIEVAL_SLURM_{str(error['loc'][0]).upper()}: "
                                       f"{error['msg'].removeprefix('Value error, ')}" for error in exc.errors())) from None
        return spec

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

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """The engine's outbound policy built from the outbound_* settings."""
        return OutboundPolicy.build(allow_loopback=self.outbound_allow_loopback,
                                    allow_private=self.outbound_allow_private,
                                    allow_networks=self.outbound_allow_networks)

    @property
    def checkpoint_roots(self) -> list[Path]:
        """The folders local checkpoints must lie under (resolved, symlinks followed)."""
        return self.model_roots or [(self.data_dir / "models").resolve()]

    def check_production_ready(self) -> None:
        """Called by every entry point (API, worker, `aieval serve`) before it starts: in production, refuse to
        start with settings that would lose data. Without AIEVAL_SECRET_KEY each machine would generate its own
        key, and workers could not decrypt the API keys the API stored."""
        if self.env != "prod":
            return
        if self.secret_key is None or not self.secret_key.get_secret_value().strip():
            raise NotProductionReady(
                "AIEVAL_ENV=prod needs AIEVAL_SECRET_KEY, the key that encrypts stored API keys; the API and every "
                "worker must share it. Generate one with\n"
                f"  {GENERATE_SECRET_KEY_COMMAND}\n"
                "and set it in .env or the environment of every API and worker process (keep it safe: losing it "
                "makes the stored keys unreadable)."
            )
        from .keyring import SecretKeyError, cipher

        try:
            cipher(self)
        except SecretKeyError as exc:
            raise NotProductionReady(f"{exc}. Generate one with\n  {GENERATE_SECRET_KEY_COMMAND}") from None

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
