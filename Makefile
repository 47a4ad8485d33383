# meshspec: `make deploy` converges this machine to mesh_spec.yaml, `make test` proves it.
# Every target bootstraps .venv first; that step is a no-op while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REPORTS := reports

.PHONY: deploy test loadtest chaos bench down purge venv cluster cluster-down cluster-acceptance

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $@

deploy: $(STAMP)
	$(BIN)/meshspec deploy deploys/mesh.py

down: $(STAMP)
	$(BIN)/meshspec deploy deploys/teardown.py

# down, then the host's install cache (MESH_CACHE_DIR, default /var/cache/meshspec), which down keeps:
# it is shared by every mesh of the host, so their next deploys install again.
purge: $(STAMP)
	$(BIN)/meshspec deploy deploys/teardown.py --data mesh_purge=true

# The README's commands as a new user runs them: none of meshspec's settings given.
DEFAULTS := env -u MESH_STATE_DIR -u MESH_PORT_OFFSET -u MESH_RUNTIME -u MESH_SPEC -u MESH_HOSTS -u MESH_HOSTS_FILE \
	-u MESH_CACHE_DIR -u CONSUL_HTTP_ADDR

# The acceptance mesh: the shipped spec, deployed beside any running mesh (own state dir and ports).
TEST_MESH := MESH_STATE_DIR=/tmp/meshspec-test MESH_PORT_OFFSET=20000

ACCEPTANCE := $(BIN)/pytest tests/bdd tests/loadtests tests/chaos --mesh=running

# Unit and integration tests; then the README's own commands with their defaults (`make deploy`:
# the user's mesh, default state dir and ports; a clean `meshspec verify`; `make down`, and
# `meshspec verify --gone`: no port, process, registration or state dir left); then the
# 41-service mesh deployed in isolation with the process runtime, the BDD suites and a short
# Locust SLO run against it; then the same mesh switched to the docker runtime and the same suites
# again (runtime-tagged scenarios run against their own runtime); then its teardown (whatever the result).
test: $(STAMP)
	mkdir -p $(REPORTS)
	$(BIN)/pytest --junitxml=$(REPORTS)/junit.xml --durations=15 --ignore=tests/bdd --ignore=tests/loadtests --ignore=tests/chaos
	$(DEFAULTS) $(MAKE) deploy && $(DEFAULTS) $(BIN)/meshspec verify --junit $(REPORTS)/verify-default.xml; \
	status=$$?; $(DEFAULTS) $(MAKE) down && $(DEFAULTS) $(BIN)/meshspec verify --gone && exit $$status
	$(MAKE) cluster-acceptance
	$(TEST_MESH) $(BIN)/meshspec deploy
	$(TEST_MESH) $(ACCEPTANCE) --junitxml=$(REPORTS)/acceptance.xml && \
	$(TEST_MESH) MESH_RUNTIME=docker $(BIN)/meshspec deploy && \
	$(TEST_MESH) MESH_RUNTIME=docker $(ACCEPTANCE) --junitxml=$(REPORTS)/acceptance-docker.xml; \
	status=$$?; $(TEST_MESH) $(BIN)/meshspec deploy deploys/teardown.py; exit $$status

# A test cluster of three hosts on this machine (network namespaces, each with its own sshd and
# /srv/meshspec): deploy to it with MESH_HOSTS_FILE=/tmp/meshspec-cluster/hosts.
cluster: $(STAMP)
	$(BIN)/meshspec cluster up

cluster-down: $(STAMP)
	$(BIN)/meshspec cluster down

# The shipped mesh across the test cluster, as the README's "Many hosts" runs it: `make cluster`,
# `MESH_HOSTS_FILE=... make deploy`, verify, the host-loss feature (one host cut off under Locust
# load); then its teardown, `verify --gone` and `make cluster-down`, whatever the result.
CLUSTER_MESH := $(DEFAULTS) MESH_HOSTS_FILE=/tmp/meshspec-cluster/hosts
cluster-acceptance: $(STAMP)
	mkdir -p $(REPORTS)
	$(MAKE) cluster
	$(CLUSTER_MESH) $(MAKE) deploy && $(CLUSTER_MESH) $(BIN)/meshspec verify --junit $(REPORTS)/verify-cluster.xml && \
	$(CLUSTER_MESH) $(BIN)/pytest tests/bdd --mesh=running -m cluster -rP --junitxml=$(REPORTS)/acceptance-cluster.xml; \
	status=$$?; $(CLUSTER_MESH) $(MAKE) down && $(CLUSTER_MESH) $(BIN)/meshspec verify --gone; \
	gone=$$?; $(MAKE) cluster-down && [ $$status -eq 0 ] && [ $$gone -eq 0 ]

# The chaos catalogue (chaos/*.json) against the running mesh: a verdict line each, the journals,
# plots and reports/chaos/report.html. `make test` runs the experiments tagged ci.
chaos: $(STAMP)
	$(BIN)/meshspec chaos run --reports $(REPORTS)/chaos

loadtest: $(STAMP)
	mkdir -p $(REPORTS)
	$(BIN)/locust -f loadtests/locustfile.py --headless -u 20 -r 5 -t 60s --stop-timeout 10 --only-summary \
		--csv $(REPORTS)/locust --html $(REPORTS)/locust.html

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
