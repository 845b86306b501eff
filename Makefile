# One command runs the tests, one runs the offline plan.
PY      ?= python3
VENV    ?= venv
BIN     := $(VENV)/bin
APT_PKGS := nebula shellcheck iproute2 iputils-ping iptables util-linux e2fsprogs

.PHONY: test plan tools deps bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

deps: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# Debian tools the tests use; installed when we can (root with apt-get), else the
# tests that need them skip locally and fail under CI=true.
tools:
	@missing=""; for t in nebula nebula-cert shellcheck ip ping iptables losetup blkid blockdev mkfs.ext4 e2fsck resize2fs dumpe2fs; do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else echo "note: install $(APT_PKGS) for the Nebula and shellcheck tests"; fi; \
	fi

test: deps tools
	$(BIN)/python -m pytest -q tests

plan: deps
	$(BIN)/python tools/plan.py --stack $${STACK:-dev} --render plan-out --json plan-out/plan.json

bench: deps
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf plan-out .pytest_cache
