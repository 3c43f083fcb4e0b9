#!/usr/bin/env bash
# Install the CKAN used by the publishing tests into its own virtual environment (.services/ckan), apart from .venv
# because CKAN pins its own Flask/SQLAlchemy/psycopg2 stack. `ckan[requirements]` from PyPI; psycopg2 is built from
# source (libpq-dev, gcc). Needs Debian's PostgreSQL 15 for the tests to run (tests/services.py: ckan); without it
# the tests skip. No Solr (on no reachable registry: the tests disable search indexing only, tests/ckan_nosolr.py)
# and no Redis (CKAN 2.12 only logs its absence; sessions are cookies). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
CVENV=${CKAN_VENV:-.services/ckan}
PKGS="ckan[requirements]==2.12.0"
STAMP="$CVENV/.installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PKGS" ]; then exit 0; fi
APT_PACKAGES="postgresql-15 libpq-dev gcc"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing;
  else echo "services-ckan: please install:$missing (needs root)" >&2; fi
fi
[ -x "$CVENV/bin/python" ] || python3 -m venv "$CVENV"
"$CVENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$CVENV/bin/python" -m pip install -q "$PKGS" 2>&1 | grep -v "^WARNING: Location" || true
"$CVENV/bin/python" -c "import ckan, ckan.config.middleware, psycopg2" \
  || { echo "services-ckan: installation incomplete" >&2; exit 1; }
echo "$PKGS" > "$STAMP"
