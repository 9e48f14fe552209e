# natt — two commands set everything up on a fresh machine: `make lab` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
APT_PACKAGES := tshark iproute2 nftables conntrack

.PHONY: test deps apt-deps venv lint unit protocol clean

$(VPY):
	$(PY) -m venv $(VENV)

venv: $(VPY) .venv/.installed

.venv/.installed: pyproject.toml | $(VPY)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

# Installs Debian packages the tests need when they are missing (CI runs as root on a clean machine).
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deps: apt-deps venv

test: deps
	$(VPY) -m ruff check natt daemons tests
	$(VPY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest -m unit $(PYTEST_ARGS)

protocol: venv
	$(VPY) -m pytest -m protocol $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check natt daemons tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
