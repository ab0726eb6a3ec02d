# The two entry points the README promises: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: deps venv test test-unit lint dist lab-test demo demo-netns demo-clean bench fuzz soak clean

deps:
	bash scripts/install-deps.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,ansible]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q conntrack_tools
	touch $@

venv: $(BIN)/.installed

test: deps venv lint
	$(BIN)/pytest
	$(MAKE) lab-test

test-unit: venv
	$(BIN)/pytest tests/unit

lint: venv
	$(BIN)/ruff check conntrack_tools tests bench fuzz scripts setup.py
	$(BIN)/yamllint -s .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint -q --profile production

# Release artifacts in dist/: the wheel and the collection ctpy.conntrack_tools (which carries the wheel).
dist: venv
	VENV=$(VENV) bash scripts/build-dist.sh

# Molecule: the four-container lab, default (ours on both firewalls) and interop (ours + C) scenarios:
# converge, idempotence, failover side_effect under 100 live TCP connections, verify (~11 min).
lab-test: venv
	$(BIN)/pip install -q -e '.[lab]' --config-settings editable_mode=compat
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/molecule test --all

# Main job: four-container lab, rollout, kill the master under live connections, report.
demo: deps venv
	bash scripts/lab.sh demo

demo-clean:
	bash scripts/lab.sh down
	bash scripts/demo.sh clean

# The quick two-namespace session (no containers): our conntrack on real traffic.
demo-netns: deps venv
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

bench: deps venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/run.py

fuzz: venv
	bash scripts/fuzz.sh

# Sync under faults (loss, link cut, kill -9), three rounds (one round runs in `make test`).
# CTPY_SYNC_FAULT_IMPL=c runs the same scenarios between two C daemons for comparison.
# The 20,000-flow bursts (NOTRACK both ways, C sender over a lossy link), five rounds (one runs in `make test`).
# The lab: failback at scale (200,000 entries), then migrate.yml (C conntrackd and back) under traffic.
soak: deps venv
	for round in 1 2 3; do $(BIN)/pytest -v -s tests/netns/test_reliability_sync_faults.py || exit 1; done
	for round in 1 2 3 4 5; do $(BIN)/pytest -v -s tests/netns/test_sync_burst.py || exit 1; done
	$(BIN)/pip install -q -e '.[lab]' --config-settings editable_mode=compat
	bash scripts/lab.sh soak; rc=$$?; bash scripts/lab.sh down; [ $$rc = 0 ] || exit $$rc
	# migrate.yml under traffic (~5 min): the master to the C conntrackd and back to ours (docs/operations.md)
	bash scripts/lab.sh up && bash scripts/lab.sh failover --passes migrate && bash scripts/lab.sh verify -k migrate; \
		rc=$$?; bash scripts/lab.sh down; exit $$rc

clean:
	rm -rf $(VENV) build dist *.egg-info roles/conntrack_tools/files/*.whl
