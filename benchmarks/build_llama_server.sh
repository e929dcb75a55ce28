#!/usr/bin/env bash
# Build llama-server from the llama.cpp sources vendored in llama-cpp-python's
# sdist (the same version the project pins), for the side-by-side serving
# benchmark. A benchmark step, not a CI step: about 10 minutes on 2 cores.
#
#   benchmarks/build_llama_server.sh [DEST]     (default: benchmarks/.llama-server)
#
# Prints the path of the llama-server binary; serving.py finds it there, or
# takes LLAMA_SERVER=/path/to/llama-server.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-benchmarks/.llama-server}
version=$(python3 -c 'import re,sys; print(re.search(r"llama-cpp-python==([0-9.]+)", open("pyproject.toml").read()).group(1))')
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ ! -d "$dest/src" ]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dest" "llama-cpp-python==$version"
    mkdir -p "$dest/src"
    tar xzf "$dest/llama_cpp_python-$version.tar.gz" -C "$dest/src" --strip-components=1
fi
cmake -S "$dest/src/vendor/llama.cpp" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=ON > "$dest/cmake.log"
cmake --build "$dest/build" --target llama-server -j "$(nproc)" > "$dest/build.log"
echo "$dest/build/bin/llama-server"
