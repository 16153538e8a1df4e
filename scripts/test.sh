#!/usr/bin/env bash
# The whole test suite: installs and builds what is missing, then runs every CTest test.
set -euo pipefail
SPARGO_BUILD_TARGETS="all"
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" --timeout 900
