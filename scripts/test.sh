#!/usr/bin/env bash
# Run the test suite from the repository root; extra arguments go to pytest.
# Uses $PYTHON if set, else `python`, else `python3`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m pytest -q "$@"
