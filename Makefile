# `make demo`: run the pipeline on the bundled synthetic demo survey.  `make test`: run the test suite.
# Both create or reuse .venv and install everything first (Debian packages too, when run as root).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data

.PHONY: setup demo test clean

$(STAMP): pyproject.toml .ci/setup.sh $(wildcard .ci/services-*.sh) .ci/preview-vendor.sh \
          pipeline/publish/preview/package-lock.json package-lock.json
	VENV=$(VENV) PCPIPE_DATA=$(DATA) bash .ci/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pcpipe demo --out demo-out

test: $(STAMP)
	PCPIPE_DATA=$(DATA) RUST_BACKTRACE=0 $(PY) -m pytest -q

clean:
	rm -rf demo-out .pytest_cache
