#!/usr/bin/env bash
# The whole suite: unit, integration (real OpenCompass, services), e2e. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export AIEVAL_LLAMA_PYTHON="$PWD/.venv-llama/bin/python"
export AIEVAL_SCHEMATHESIS="$PWD/.venv-schemathesis/bin/st"
export AIEVAL_SHARED_DATA="${AIEVAL_SHARED_DATA:-$(cd .. && pwd)/shared/datasets}"
bash scripts/ensure_services.sh
started=$SECONDS
status=0
# --durations: the slowest tests, printed so that CI logs show where the suite's time goes.
.venv/bin/python -m pytest tests -q -p no:cacheprovider --durations=25 "$@" || status=$?
echo "test suite finished in $((SECONDS - started)) s (pytest exit $status)"
exit $status
