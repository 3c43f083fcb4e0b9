#!/usr/bin/env bash
# Install the STAC API used by the publishing tests into its own virtual environment (.services/stac), apart from
# .venv because stac-fastapi-pgstac pins its own FastAPI/pydantic/psycopg stack. Needs Debian's PostgreSQL 15 with
# PostGIS for the tests to run (tests/services.py: stac_api); without them the tests skip. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SVENV=${STAC_VENV:-.services/stac}
PKGS="stac-fastapi-pgstac==7.2.0 pypgstac[psycopg]==0.10.0 uvicorn==0.54.0"
STAMP="$SVENV/.installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PKGS" ]; then exit 0; fi
APT_PACKAGES="postgresql-15 postgresql-15-postgis-3"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing;
  else echo "services-stac: please install:$missing (needs root)" >&2; fi
fi
[ -x "$SVENV/bin/python" ] || python3 -m venv "$SVENV"
"$SVENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$SVENV/bin/python" -m pip install -q $PKGS 2>&1 | grep -v "^WARNING: Location" || true
"$SVENV/bin/python" -c "import stac_fastapi.pgstac, pypgstac, uvicorn" \
  || { echo "services-stac: installation incomplete" >&2; exit 1; }
echo "$PKGS" > "$STAMP"
