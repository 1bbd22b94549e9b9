# ai-eval-system server image: the API (default command) or a worker (override the command).
#
#   docker build -f docker/server.dockerfile -t aieval-server .
#   docker run -p 8000:8000 -e AIEVAL_INITIAL_ADMIN_USERNAME=admin -e AIEVAL_INITIAL_ADMIN_PASSWORD=<12+ chars> \
#       aieval-server                                           # embedded default: API + worker, SQLite, sign-in
#   docker run --env-file .env -e AIEVAL_ENV=prod aieval-server python apps/server/start_fastapi_server.py
#   docker run --env-file .env -e AIEVAL_ENV=prod aieval-server python apps/server/start_celery_worker.py --queues api
#
# Production settings come from configs/environments/prod.yaml plus AIEVAL_* variables (AIEVAL_DB_URL,
# AIEVAL_BROKER_URL, AIEVAL_REDIS_URL, AIEVAL_S3_*, AIEVAL_SECRET_KEY); run `python scripts/migrate_db.py` once
# per release before starting the API.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIEVAL_DATA_DIR=/data

WORKDIR /app
# CPU torch first (OpenCompass would otherwise pull a CUDA build), as the Makefile does.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY apps ./apps
COPY configs ./configs
COPY scripts ./scripts
# [monitoring]: Celery Flower, run from this image by the Helm chart (configs/deploy/helm/aieval).
RUN pip install -e ".[monitoring]" \
    && useradd --create-home --uid 1000 aieval \
    && mkdir -p /data && chown aieval /data
USER aieval
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health').status != 200)"
# A container listens on all its addresses, which `aieval serve` allows only with sign-in on (docs/SECURITY.md).
ENV AIEVAL_AUTH_ENABLED=true
CMD ["python", "-m", "aieval_server", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
