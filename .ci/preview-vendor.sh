#!/usr/bin/env bash
# Install the JS libraries of the preview page (Leaflet, CesiumJS; pinned in pipeline/publish/preview/package-lock.json)
# into pipeline/publish/preview/node_modules, from the npm registry. pipeline/publish/preview.py copies the few files
# the page needs from there into each run's preview/vendor/. Idempotent: does nothing when the installed packages
# already match the lock file. Nothing here is committed (node_modules/ is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../pipeline/publish/preview"
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  else
    echo "preview-vendor: npm not found; install Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
stamp=node_modules/.pcpipe-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f node_modules/cesium/Build/Cesium/Cesium.js ] \
   && [ -f node_modules/leaflet/dist/leaflet.js ]; then
  echo "preview-vendor: up to date ($(du -sh node_modules | cut -f1) in pipeline/publish/preview/node_modules)"
  exit 0
fi
# --ignore-scripts: the page needs the packages' prebuilt files only; no install script is run.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
echo "preview-vendor: installed $(du -sh node_modules | cut -f1) in pipeline/publish/preview/node_modules"
