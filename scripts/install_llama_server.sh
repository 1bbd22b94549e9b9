#!/usr/bin/env bash
# Installs llama-cpp-python's OpenAI-compatible server into its own venv. It is source-only on PyPI and
# takes 8-22 minutes to compile on 2 cores, so the built wheel is kept in a per-machine cache and reused.
set -euo pipefail
venv=${1:-.venv-llama}
python=${2:-python3}
version=0.3.36
# Built for a portable x86-64 baseline (AVX2/FMA/F16C), not -march=native: a native build on a CPU that
# advertises AMX/AVX-512 the sandbox does not let a process use dies with "Illegal instruction" at the first
# request (seen on these machines). The flags are part of the cache path, so a wheel built otherwise is not reused
# (and pip's own wheel cache, which ignores CMAKE_ARGS, is bypassed).
build_flags="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
cache=${AIEVAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aieval/wheels}/portable-avx2
mkdir -p "$cache"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! ls "$cache"/llama_cpp_python-$version-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $version once for this machine (several minutes)..."
  CMAKE_ARGS="${CMAKE_ARGS:-$build_flags}" "$venv/bin/python" -m pip wheel --no-cache-dir --no-deps -w "$cache" "llama-cpp-python==$version"
fi
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps --find-links "$cache" --no-index "llama-cpp-python==$version"
"$venv/bin/python" -m pip install -q --find-links "$cache" "llama-cpp-python[server]==$version"
"$venv/bin/python" -c "import llama_cpp.server" 
