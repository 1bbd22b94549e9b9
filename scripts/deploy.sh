#!/usr/bin/env bash
# Deploys (or updates) ai-eval-system from this checkout. Idempotent: run it after every `git pull`; each step
# does only what is missing or changed. See docs/OPERATIONS.md "Deploying" and `scripts/deploy.sh --help`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_DIR="$REPO/configs/deploy"
ALL_STEPS_SYSTEMD="install,migrate,build,nginx,restart"
ALL_STEPS_COMPOSE="build,migrate,restart"

usage() {
  cat <<EOF
Usage: scripts/deploy.sh [options]

Deploys or updates ai-eval-system from this checkout ($REPO). Safe to run again:
each step does only what is missing or changed.

Modes:
  --mode systemd   (default) on this host: the venv, migrations, the UI build, Nginx with
                   configs/deploy/nginx.conf, and the systemd units aieval-api and aieval-worker
                   (configs/deploy/systemd/); settings in .env of the checkout (AIEVAL_ENV=prod).
  --mode compose   the Docker Compose set-up in docker/ (images, migrations, containers); settings in
                   docker/compose.env (from docker/compose.env.example).

Steps, in this order (--steps picks some of them, comma-separated):
  systemd:  install  create or upgrade .venv (make install)
            migrate  apply the database migrations (scripts/migrate_db.py)
            build    build the web UI into apps/web/dist (make web)
            nginx    install the Nginx site (TLS with --tls-cert/--tls-key), check it, reload Nginx
            restart  install or update the systemd units, restart the API and the worker
  compose:  build    build the images (the UI and configs/deploy/nginx.conf are in the web image)
            migrate  run the migrate service
            restart  start or recreate the containers that changed

Options:
  --dry-run               print the steps and their commands, change nothing
  --steps LIST            only these steps (default: all of the mode's)
  --env-file FILE         compose: the variables file (default docker/compose.env)
  --nginx-site FILE       systemd: where the site goes (default /etc/nginx/conf.d/aieval.conf)
  --no-nginx-reload       systemd: write the site but do not check or reload Nginx
  --server-name NAMES     Nginx server_name (default _ : any name)
  --tls-cert FILE         turn TLS on: the certificate chain (PEM); needs --tls-key
  --tls-key FILE          the certificate's private key (PEM)
  --api-port PORT         systemd: the API's loopback port (default 8000)
  --api-workers N         systemd: API processes (default 2)
  --worker-queues LIST    systemd: the worker's queues (default api,local)
  --units LIST            systemd: the units to install and restart (default aieval-api,aieval-worker;
                          a machine that only adds workers: aieval-worker)
  --max-upload SIZE       Nginx client_max_body_size (default: the server's max_upload_bytes + 10 MiB)
  --user NAME             systemd: the user the services run as (default: the checkout's owner)
  -h, --help              this text
EOF
}

mode=systemd
dry_run=0
steps=""
env_file="$REPO/docker/compose.env"
nginx_site=/etc/nginx/conf.d/aieval.conf
nginx_reload=1
server_name=_
tls_cert=""
tls_key=""
api_port=8000
api_workers=2
worker_queues=api,local
units=aieval-api,aieval-worker
max_upload=""
service_user="$(stat -c %U "$REPO")"

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "deploy.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --mode) need_value "$@"; mode="$2"; shift ;;
    --steps) need_value "$@"; steps="$2"; shift ;;
    --env-file) need_value "$@"; env_file="$2"; shift ;;
    --nginx-site) need_value "$@"; nginx_site="$2"; shift ;;
    --no-nginx-reload) nginx_reload=0 ;;
    --server-name) need_value "$@"; server_name="$2"; shift ;;
    --tls-cert) need_value "$@"; tls_cert="$2"; shift ;;
    --tls-key) need_value "$@"; tls_key="$2"; shift ;;
    --api-port) need_value "$@"; api_port="$2"; shift ;;
    --api-workers) need_value "$@"; api_workers="$2"; shift ;;
    --worker-queues) need_value "$@"; worker_queues="$2"; shift ;;
    --units) need_value "$@"; units="$2"; shift ;;
    --max-upload) need_value "$@"; max_upload="$2"; shift ;;
    --user) need_value "$@"; service_user="$2"; shift ;;
    *) echo "deploy.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$mode" in
  systemd) all_steps=$ALL_STEPS_SYSTEMD ;;
  compose) all_steps=$ALL_STEPS_COMPOSE ;;
  *) echo "deploy.sh: --mode is systemd or compose, not '$mode'" >&2; exit 2 ;;
esac
steps="${steps:-$all_steps}"
for step in ${steps//,/ }; do
  case ",$all_steps," in
    *",$step,"*) ;;
    *) echo "deploy.sh: '$step' is not a step of --mode $mode (its steps: $all_steps)" >&2; exit 2 ;;
  esac
done
if { [ -n "$tls_cert" ] && [ -z "$tls_key" ]; } || { [ -z "$tls_cert" ] && [ -n "$tls_key" ]; }; then
  echo "deploy.sh: TLS needs both --tls-cert and --tls-key" >&2; exit 2
fi
for unit in ${units//,/ }; do
  [ -f "$DEPLOY_DIR/systemd/$unit.service" ] || {
    echo "deploy.sh: there is no unit '$unit' (configs/deploy/systemd/: aieval-api, aieval-worker)" >&2; exit 2; }
done
case "$api_port$api_workers" in *[!0-9]*) echo "deploy.sh: --api-port and --api-workers are numbers" >&2; exit 2 ;; esac

wants() { case ",$steps," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { echo "==> $*"; }
# Every change goes through run: printed, and carried out unless --dry-run.
run() {
  echo "+ $*"
  if [ "$dry_run" = 0 ]; then "$@"; fi
}
as_root() { if [ "$(id -u)" = 0 ]; then run "$@"; else run sudo "$@"; fi; }
as_owner() {
  if [ "$(id -u)" = 0 ] && [ "$service_user" != root ]; then run runuser -u "$service_user" -- "$@"; else run "$@"; fi
}

# A file from a template: ${NAME} replaced by the values given as NAME=value; written (as root) only when it
# differs from what is there, so a second run changes nothing. Returns 0 when it wrote, 1 when unchanged.
install_rendered() {
  local source="$1" target="$2" rendered expressions=() pair
  shift 2
  for pair in "$@"; do
    expressions+=(-e "s|\${${pair%%=*}}|${pair#*=}|g")
  done
  rendered="$(mktemp)"
  sed "${expressions[@]}" "$source" > "$rendered"
  if [ -f "$target" ] && cmp -s "$rendered" "$target"; then
    echo "  $target is up to date"
    rm -f "$rendered"
    return 1
  fi
  if [ "$dry_run" = 1 ]; then
    echo "+ install -m 0644 <${RENDERED_FROM:-${source#"$REPO"/}}, rendered> $target"
  elif [ -w "$(dirname "$target")" ]; then
    install -m 0644 "$rendered" "$target"
  else
    sudo install -m 0644 "$rendered" "$target"
  fi
  rm -f "$rendered"
  return 0
}

# client_max_body_size: the server's max_upload_bytes (AIEVAL_MAX_UPLOAD_BYTES, .env) plus room for the form.
nginx_upload_limit() {
  if [ -n "$max_upload" ]; then echo "$max_upload"; return; fi
  local bytes=$((50 * 1024 * 1024))
  if [ -x "$REPO/.venv/bin/python" ]; then
    bytes="$(cd "$REPO" && AIEVAL_ENV="${AIEVAL_ENV:-prod}" .venv/bin/python -c \
      'from aieval_server.config import get_settings; print(get_settings().max_upload_bytes)' 2>/dev/null || echo "$bytes")"
  fi
  echo "$(( (bytes + 1048575) / 1048576 + 10 ))m"
}

# The site file: without TLS the "#tls " lines are left out; with TLS they are uncommented and the plain
# "listen 80" line goes (port 80 then only redirects).
render_nginx_site() {
  local tls_filter=()
  if [ -n "$tls_cert" ]; then
    tls_filter=(-e '/# without TLS$/d' -e 's/^#tls //')
  else
    tls_filter=(-e '/^#tls /d')
  fi
  local source
  source="$(mktemp)"
  sed "${tls_filter[@]}" -e "s|^\(    server_name\) _;|\1 $server_name;|" "$DEPLOY_DIR/nginx.conf" > "$source"
  local status=0
  RENDERED_FROM=configs/deploy/nginx.conf install_rendered "$source" "$nginx_site" "AIEVAL_API_UPSTREAM=127.0.0.1:$api_port" \
    "AIEVAL_MAX_UPLOAD=$(nginx_upload_limit)" "AIEVAL_WEB_ROOT=$REPO/apps/web/dist" \
    "AIEVAL_TLS_CERT=$tls_cert" "AIEVAL_TLS_KEY=$tls_key" || status=$?
  rm -f "$source"
  return "$status"
}

deploy_systemd() {
  cd "$REPO"
  if wants install; then
    say "install: the Python environment (.venv; upgraded when pyproject.toml changed)"
    as_owner make install
  fi
  if wants migrate; then
    say "migrate: the database schema"
    as_owner env AIEVAL_ENV="${AIEVAL_ENV:-prod}" .venv/bin/python scripts/migrate_db.py
  fi
  if wants build; then
    say "build: the web UI (apps/web/dist)"
    as_owner make web
  fi
  if wants nginx; then
    say "nginx: the site $nginx_site${tls_cert:+ with TLS}"
    render_nginx_site || true
    if [ "$nginx_reload" = 1 ]; then
      as_root nginx -t -q
      as_root systemctl reload-or-restart nginx
    fi
  fi
  if wants restart; then
    local changed=0 unit unit_list=()
    read -r -a unit_list <<< "${units//,/ }"
    say "restart: the systemd units ${unit_list[*]}"
    for unit in "${unit_list[@]}"; do
      if install_rendered "$DEPLOY_DIR/systemd/$unit.service" "/etc/systemd/system/$unit.service" \
          "AIEVAL_HOME=$REPO" "AIEVAL_USER=$service_user" "AIEVAL_API_PORT=$api_port" \
          "AIEVAL_API_WORKERS=$api_workers" "AIEVAL_WORKER_QUEUES=$worker_queues"; then
        changed=1
      fi
    done
    if [ "$changed" = 1 ]; then as_root systemctl daemon-reload; fi
    as_root systemctl enable --quiet "${unit_list[@]}"
    as_root systemctl restart "${unit_list[@]}"
  fi
}

deploy_compose() {
  cd "$REPO"
  if [ ! -f "$env_file" ] && [ "$dry_run" = 0 ]; then
    echo "deploy.sh: $env_file is missing: cp docker/compose.env.example docker/compose.env and fill it in" >&2
    exit 1
  fi
  local compose=(docker compose -f docker/docker-compose.yml --env-file "$env_file")
  if wants build; then
    say "build: the images (server; web with the UI and configs/deploy/nginx.conf)"
    run "${compose[@]}" build
  fi
  if wants migrate; then
    say "migrate: the database schema (the migrate service)"
    run "${compose[@]}" run --rm migrate  # starts PostgreSQL first (depends_on)
  fi
  if wants restart; then
    say "restart: the containers whose image or settings changed"
    run "${compose[@]}" up -d --remove-orphans
  fi
}

if [ "$dry_run" = 1 ]; then say "dry run ($mode): nothing is changed"; fi
"deploy_$mode"
say "done"
