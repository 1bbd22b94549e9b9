#!/usr/bin/env bash
# Installs llama-cpp-python's OpenAI-compatible server into its own venv. It is source-only on PyPI and
# takes 8-22 minutes to compile on 2 cores, so the built wheel is kept in a per-machine cache and reused.
set -euo pipefail
venv=${1:-.venv-llama}
python=${2:-python3}
version=0.3.36
cache=${AIEVAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aieval/wheels}
mkdir -p "$cache"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! ls "$cache"/llama_cpp_python-$version-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $version once for this machine (several minutes)..."
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" "$venv/bin/python" -m pip wheel --no-deps -w "$cache" "llama-cpp-python==$version"
fi
"$venv/bin/python" -m pip install -q --find-links "$cache" "llama-cpp-python[server]==$version"
"$venv/bin/python" -c "import llama_cpp.server" 
