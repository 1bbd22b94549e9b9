from __future__ import annotations


def test_environment_yaml_is_overridden_by_environment_variables(tmp_path, monkeypatch):
    from aieval_server.config import Settings

    (tmp_path / "staging.yaml").write_text("storage: s3\ns3_bucket: from-yaml\nheartbeat_interval_s: 7\n")
    monkeypatch.setenv("AIEVAL_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("AIEVAL_ENV", "staging")
    monkeypatch.setenv("AIEVAL_S3_BUCKET", "from-env")
    settings = Settings()
    assert settings.storage == "s3"  # from the YAML layer
    assert settings.heartbeat_interval_s == 7
    assert settings.s3_bucket == "from-env"  # environment beats YAML


def test_embedded_defaults_need_no_server(tmp_path, monkeypatch):
    from aieval_server.config import Settings

    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/aieval.db"
    assert settings.celery_broker_url == "filesystem://"
    assert settings.public_summary() == {
        "env": "dev", "database": "sqlite", "broker": "filesystem", "events": "database-polling", "storage": "local",
    }


def test_prod_yaml_selects_postgres_redis_and_s3(monkeypatch):
    from aieval_server.config import Settings

    monkeypatch.setenv("AIEVAL_ENV", "prod")
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.celery_broker_url.startswith("redis://")
    assert settings.storage == "s3" and settings.auto_migrate is False
