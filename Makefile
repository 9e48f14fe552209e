# natt — two commands set everything up on a fresh machine: `make lab` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?= --durations=30
# Two workers, a test file each at a time (module-scoped labs stay in one worker): the lab and interop tests spend
# most of their time waiting on timers (lifetimes, pings), so two run side by side in each other's idle time.
PYTEST_WORKERS ?= -n 2 --dist loadfile
APT_PACKAGES := tshark iproute2 nftables conntrack systemd iputils-ping iperf3 vpnc vpnc-scripts strongswan-charon strongswan-swanctl libcharon-extra-plugins libcharon-extauth-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins curl chromium chromium-driver
LAB_PREFIX ?= natt-

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
	$(VPY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest -m unit $(PYTEST_ARGS)

protocol: venv
	$(VPY) -m pytest -m protocol $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check natt daemons tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

.PHONY: lab lab-net lab-down lab-shell

# The lab network only (namespaces <prefix><role>, veths, bridges, addresses, routes); no daemons.
lab-net: venv
	$(VENV)/bin/natt-lab net-up --prefix '$(LAB_PREFIX)'

# Removes the lab. Uses natt-lab when the venv works; otherwise a pure-shell cleanup that signals only
# the PIDs recorded in the lab's pidfiles (and only while their start time still matches the record),
# then deletes only the namespaces and root-namespace veths named <prefix><letters/digits/_>.
lab-down:
	@if [ -x $(VENV)/bin/natt-lab ] && $(VENV)/bin/natt-lab down --prefix '$(LAB_PREFIX)'; then exit 0; fi; \
	case '$(LAB_PREFIX)' in ''|*[!A-Za-z0-9_-]*|*[!-]) echo "bad LAB_PREFIX '$(LAB_PREFIX)'"; exit 2;; esac; \
	echo "natt-lab not usable: shell cleanup of lab '$(LAB_PREFIX)'"; \
	run=/run/natt-lab/$(LAB_PREFIX); \
	live() { for f in "$$run"/pids/*.pid; do [ -f "$$f" ] || continue; read -r pid start _ < "$$f"; \
	  [ -n "$$pid" ] && [ "$$(sed 's/^.*) //' /proc/$$pid/stat 2>/dev/null | awk '$$1 != "Z" {print $$20}')" = "$$start" ] \
	  && echo $$pid; done; return 0; }; \
	pids=$$(live); [ -z "$$pids" ] || { echo "stopping pids" $$pids; kill -TERM $$pids; }; \
	for i in $$(seq 50); do [ -z "$$(live)" ] && break; sleep 0.1; done; \
	pids=$$(live); [ -z "$$pids" ] || { echo "killing pids" $$pids; kill -KILL $$pids; }; \
	rm -rf "$$run/pids"; rmdir "$$run" 2>/dev/null || true; \
	for ns in $$(ip netns list | awk '{print $$1}' | grep -E '^$(LAB_PREFIX)[A-Za-z0-9_]+$$'); do \
	  echo "removing namespace $$ns"; ip netns del "$$ns"; done; \
	for l in $$(ip -o link show type veth | awk -F': ' '{print $$2}' | cut -d@ -f1 | grep -E '^$(LAB_PREFIX)[A-Za-z0-9_]+$$'); do \
	  echo "removing link $$l"; ip link del "$$l" 2>/dev/null || true; done; \
	echo "lab '$(LAB_PREFIX)' is down"

# An interactive shell in one namespace of the lab: make lab-shell NS=client1
lab-shell: venv
	@[ -n "$(NS)" ] || { echo "usage: make lab-shell NS=client1|client2|pat|inet|pubclient|conc|server"; exit 2; }
	$(VENV)/bin/natt-lab shell '$(NS)' --prefix '$(LAB_PREFIX)'

# The seed scenario, for real: namespaces, PAT gateway, concentrator, two clients, traffic, views.
# NAT_T=off: the seed's failure case (NAT transparency off: the clients connect, no data passes; diagnosis and fix).
# natt-manager (the web pages) starts too, on the concentrator's private side; MANAGER=0 leaves it out.
lab: deps
	$(VENV)/bin/natt-lab up --prefix $(LAB_PREFIX) --configs configs $(if $(NAT_T),--nat-transparency $(NAT_T)) $(if $(filter 0,$(MANAGER)),,--manager)

.PHONY: fuzz
FUZZ_RUNS ?= 1000000
# Coverage-guided fuzzing (atheris/libFuzzer) of the concentrator's and client's datagram entry points, from the
# seed flow's datagrams; prints inputs/s (exec/s) and coverage (cov, ft). Findings land in fuzz/crash-*.
fuzz: venv
	mkdir -p fuzz/corpus
	PYTHONPATH=. $(VPY) -m tests.fuzz.seeds fuzz/corpus
	PYTHONPATH=. $(VPY) -m tests.fuzz.run -runs=$(FUZZ_RUNS) -max_len=700 -artifact_prefix=fuzz/ fuzz/corpus

.PHONY: bench bench-smoke
BENCH_ARGS ?=
CONNECT_ARGS ?= --count 10000 --hold 300

# Throughput through every VPN configuration (fresh lab namespaces bn-*, removed afterwards), then the
# handshake load generator against our concentrator and strongSwan; JSON in bench/results/.
bench: deps
	$(VENV)/bin/natt-bench throughput $(BENCH_ARGS)
	$(VENV)/bin/natt-bench connect $(CONNECT_ARGS)

# The same with tiny durations and counts: checks the bench works, not how fast anything is.
bench-smoke: deps
	$(VENV)/bin/natt-bench throughput --duration 2 --only plain --only natt:aes128gcm16 $(BENCH_ARGS)
	$(VENV)/bin/natt-bench connect --count 20 --hold 3
