#!/usr/bin/env bash
# The main job: installs and builds what is missing, then runs `spargo train` (the embedded default experiment
# unless arguments say otherwise; they are passed to `spargo train`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$BUILD_DIR/cli/spargo" train "$@"
