#!/usr/bin/env bash
# Install what the Cloudflare integration tier needs, independent of the Makefile:
# the npm packages (pyodide, miniflare) from the committed lock file, and the workers
# SDK (PyPI workers-runtime-sdk) unpacked where Pyodide mounts it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
SDK_VERSION=1.9.5

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -f .cache/sdk/workers/__init__.py ] || [ "$(cat .cache/sdk/.version 2>/dev/null)" != "$SDK_VERSION" ]; then
  rm -rf .cache/sdk .cache/wheel && mkdir -p .cache/sdk .cache/wheel
  "$PY" -m pip download -q --no-deps "workers-runtime-sdk==$SDK_VERSION" -d .cache/wheel
  "$PY" -m zipfile -e .cache/wheel/workers_runtime_sdk-*.whl .cache/sdk
  # The runtime-internal modules are replaced by stand-ins (standins/); drop their stubs.
  rm -f .cache/sdk/_cloudflare_compat_flags.pyi .cache/sdk/_pyodide_entrypoint_helper.pyi
  echo "$SDK_VERSION" > .cache/sdk/.version
fi
