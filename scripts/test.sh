#!/usr/bin/env bash
# Set up (idempotent, fast when already done), then run the whole test suite.
# Extra arguments go to pytest, e.g. `sudo scripts/test.sh -x -k lab`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest -q "$@"
