#!/usr/bin/env bash
# Installs the Debian packages spargo needs (only those missing), configures build/ ($SPARGO_BUILD_DIR when set) once,
# then builds the CMake targets named in $SPARGO_BUILD_TARGETS (space-separated; default `all`, tests included).
# Idempotent: a second run installs nothing and rebuilds only what changed. Sourced by train.sh (which builds only
# the `spargo` binary) and test.sh (which builds everything).
set -euo pipefail

SPARGO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${SPARGO_BUILD_DIR:-$SPARGO_ROOT/build}"

# Package -> what it is for (README.md lists the same).
PACKAGES=(
  g++ cmake ninja-build pkg-config ccache  # compiler, build system, compiler cache
  libtorch-dev                             # tensors, autograd, optimizers (Debian's libtorch 1.13, CPU)
  libgloo-dev                              # the data-parallel learner on CPU (Gloo, inside libtorch's c10d)
  libopenblas0-openmp                      # fast BLAS for libtorch (Debian otherwise falls back to reference BLAS)
  libprotobuf-dev protobuf-compiler        # messages and the experiment-config schema (text format)
  libgrpc++-dev protobuf-compiler-grpc     # rollout and reward services
  libabsl-dev                              # Status/StatusOr, strings, flags, synchronisation
  libre2-dev                               # answer extraction in rewards
  libonig-dev                              # tokenizer.json pre-tokenizer regexes (the engine HF tokenizers uses)
  libicu-dev                               # tokenizer.json normalizers (NFC, NFKC, lowercase, ...)
  nlohmann-json3-dev                       # JSON files: metrics.jsonl, summaries, checkpoints' state
  libcpp-httplib-dev                       # the Prometheus /metrics endpoint; the judge's OpenAI-compatible client
  libgtest-dev libgmock-dev                # tests
  python3-grpcio python3-protobuf          # the example out-of-process reward plugin (Python) and its test
  python3                                  # the sandboxed code runner's Python (code_tests reward)
  openssl                                  # tests: a throwaway TLS certificate for the services
  slurmctld slurmd slurm-client munge      # tests: a one-node Slurm cluster for deploy/slurm (no systemd needed)
  python3-yaml                             # tests: reading the Kubernetes manifests in deploy/k8s
  gnuplot-nox                              # the run's curves.png (spargo train at the end, spargo plot)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ccache across clones; sloppiness lets it cache objects built with the precompiled torch header.
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_BASEDIR="$SPARGO_ROOT"  # relative paths in the hash: clones in other folders share the cache
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S "$SPARGO_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
read -r -a build_targets <<<"${SPARGO_BUILD_TARGETS:-}"
((${#build_targets[@]})) || build_targets=(all)
echo "setup: building ${build_targets[*]} in $BUILD_DIR"
cmake --build "$BUILD_DIR" --target "${build_targets[@]}" -- -j"$(nproc)"
