#!/usr/bin/env bash
# Regenerate the web UI's typed API client from the server's own OpenAPI schema.
# The generated files (apps/web/openapi.json, apps/web/src/api/) are committed, so building the UI
# needs no Python; run this after any change to the server's routes or schemas.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
web="$repo/apps/web"

# create_app() does not touch the database until its lifespan runs, so dumping the schema needs no server.
# A throw-away data dir keeps this from creating anything under the user's home.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
AIEVAL_DATA_DIR="$tmp" "$python" - "$web/openapi.json" <<'PY'
import json, sys
from aieval_server.main import create_app
schema = create_app().openapi()
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(schema, out, indent=2, sort_keys=True, ensure_ascii=False)
    out.write("\n")
PY
cd "$web"
npx --no-install openapi-ts
echo "generated $web/src/api from $web/openapi.json"
