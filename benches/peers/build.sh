#!/usr/bin/env bash
# Builds llama.cpp's own tools — llama-server, llama-bench, llama-batched-bench — from the
# llama.cpp vendored in the llama-cpp-python source distribution on the package index
# (0.3.36: ggml 0.25, the closest to the ggml 0.26 that llama-cpp-sys-2 0.1.161 vendors,
# which ships no tools), with the project's CPU flags (.cargo/config.toml: x86-64-v3,
# OpenMP, and its GGML_LLAMAFILE setting unless the environment sets one; each setting
# builds into its own folder). Idempotent; prints the folder holding the binaries.
#
#   benches/peers/build.sh                     # ~6-12 minutes on 2 cores the first time
#   GGML_LLAMAFILE=OFF benches/peers/build.sh  # the other llamafile setting, to compare
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
home="${ORCHESTRA_HOME:-$HOME/.cache/orchestra}"
root="$home/peers/llama-cpp-python-$version"
project="$(cd "$(dirname "$0")/../.." && pwd)"
configured="$(sed -n 's/^GGML_LLAMAFILE *= *"\([A-Za-z]*\)".*/\1/p' "$project/.cargo/config.toml" | head -n 1)"
llamafile="${GGML_LLAMAFILE:-${configured:-OFF}}"
build="$root/build"
if [ "$llamafile" = ON ]; then
  build="$root/build-llamafile"
fi
bin="$build/bin"
if [ -x "$bin/llama-server" ] && [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-batched-bench" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
if [ ! -d "$root/src/vendor/llama.cpp" ]; then
  echo "fetching llama-cpp-python $version (source distribution) …" >&2
  tmp="$(mktemp -d)"
  pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp" >&2
  mkdir -p "$root/src"
  tar xzf "$tmp"/llama_cpp_python-"$version".tar.gz -C "$root/src" --strip-components=1
  rm -rf "$tmp"
fi
echo "building llama-server, llama-bench, llama-batched-bench (several minutes) …" >&2
cmake -S "$root/src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_OPENMP=ON -DGGML_LLAMAFILE="$llamafile" \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$build" -j"$(nproc)" --target llama-server llama-bench llama-batched-bench >&2
echo "$bin"
