#!/usr/bin/env bash
# Set up (idempotent, fast when already done), then run the demo.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/tracer" demo "$@"
