#!/usr/bin/env bash
# The main job: installs what is missing and builds the `spargo` binary (not the tests), then runs `spargo train`
# (the embedded default experiment unless arguments say otherwise; they are passed to `spargo train`).
set -euo pipefail
SPARGO_BUILD_TARGETS="spargo"
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$BUILD_DIR/cli/spargo" train "$@"
