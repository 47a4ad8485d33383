# meshspec: `make deploy` converges this machine to mesh_spec.yaml, `make test` proves it.
# Every target bootstraps .venv first; that step is a no-op while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REPORTS := reports

.PHONY: deploy test loadtest bench down venv

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

test: $(STAMP)
	mkdir -p $(REPORTS)
	$(BIN)/pytest --junitxml=$(REPORTS)/junit.xml

loadtest: $(STAMP)
	@test -f loadtests/locustfile.py || { echo "make loadtest: loadtests/locustfile.py does not exist yet (issue #7)" >&2; exit 2; }
	$(BIN)/locust -f loadtests/locustfile.py --headless

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
