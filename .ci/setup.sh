#!/usr/bin/env bash
# Create or reuse .venv and install everything the project needs, Debian packages included (run as root on a
# fresh Debian 12). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# Debian packages: python3-venv for the virtual environment, libusb-1.0-0 for open3d-cpu, chromium for the
# preview page's browser test (with a Japanese font, or the page's Japanese shows as boxes).
APT_PACKAGES="python3-venv libusb-1.0-0 chromium fonts-ipafont-gothic"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing;
  else echo "setup: please install:$missing (needs root)" >&2; fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import laspy, lazrs, pyproj, japan_geoid, dask, distributed, pipeline" \
  || { echo "setup: installation incomplete" >&2; exit 1; }
# Services the publishing tests start on 127.0.0.1, each in its own venv under .services/ (their pins clash).
bash .ci/services-stac.sh
bash .ci/services-ckan.sh
# The preview page's JS (Leaflet, CesiumJS) from npm, vendored into each published run.
bash .ci/preview-vendor.sh
# Node tools of the tests (Khronos glTF-Validator for the 3D Tiles content), pinned in package-lock.json.
if command -v npm >/dev/null; then npm ci --no-audit --no-fund --silent;
else echo "setup: npm absent: the glTF-Validator test will be skipped" >&2; fi
# Validators npm does not serve under their names (3d-tiles-validator, copc-validator): their builds and lock files
# sit in ../shared/tools (read-only in CI), copied under .services/ and installed there once.
TOOLS="${PCPIPE_DATA:-../shared/data}/../tools"
for t in 3d-tiles-validator copc-validator; do
  if [ -d "$TOOLS/$t" ] && command -v npm >/dev/null; then
    if [ ! -f ".services/$t/.installed" ]; then
      rm -rf ".services/$t" && mkdir -p .services && cp -r "$TOOLS/$t" ".services/$t"
      npm ci --omit=dev --no-audit --no-fund --silent --prefix ".services/$t" && touch ".services/$t/.installed"
    fi
  else echo "setup: $t not found in $TOOLS (or npm absent): its tests will be skipped" >&2; fi
done
touch "$VENV/.installed"
