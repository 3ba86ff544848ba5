# Every step of the dynamic risk assessment system. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config.json
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# pytest-xdist processes for make test and test-fast (auto: one per core)
TEST_WORKERS ?= auto
# The tests write bytecode caches even where PYTHONDONTWRITEBYTECODE is set: without pytest's cache of
# the rewritten test modules, each test process rewrites and compiles them all again (~4 s a process).
TEST_ENV := PYTHONDONTWRITEBYTECODE=

.DEFAULT_GOAL := help
.PHONY: help install data ingest train score deploy versions inventory approve reject verify-audit rollback activate diagnostics report run demo-drift demo-outcomes serve apicalls lint test test-fast bench clean

help: ## List every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned requirements

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

data: $(STAMP) ## Make the sample data where it is absent (deterministic)
	$(PY) sampledata.py --config $(CONFIG)

ingest: $(STAMP) ## Merge new files from sourcedata/ into the master dataset
	$(PY) ingestion.py --config $(CONFIG)

train: $(STAMP) ## Fit the candidate models and save the best to models/
	$(PY) training.py --config $(CONFIG)

score: $(STAMP) ## Score the trained model on testdata/
	$(PY) scoring.py --config $(CONFIG)

deploy: $(STAMP) ## Promote the trained model as a new production version
	$(PY) deployment.py --config $(CONFIG)

versions: $(STAMP) ## List deployed versions with their scores and warnings; which is current, since when
	$(PY) deployment.py --config $(CONFIG) --list

inventory: $(STAMP) ## Every version with its status (current, pending, rejected, rolled back, ...), dates, scores, approver
	$(PY) deployment.py --config $(CONFIG) --inventory

approve: $(STAMP) ## Approve a pending version: make approve VERSION=vN BY=NAME [NOTE="..."]
	@test -n "$(VERSION)" -a -n "$(BY)" || { echo "usage: make approve VERSION=vN BY=NAME [NOTE=\"...\"] (make inventory lists pending ones)" >&2; exit 2; }
	$(PY) deployment.py --config $(CONFIG) --approve $(VERSION) --by "$(BY)" $(if $(NOTE),--note "$(NOTE)")

reject: $(STAMP) ## Reject a pending version: make reject VERSION=vN BY=NAME NOTE="why"
	@test -n "$(VERSION)" -a -n "$(BY)" -a -n "$(NOTE)" || { echo "usage: make reject VERSION=vN BY=NAME NOTE=\"why\"" >&2; exit 2; }
	$(PY) deployment.py --config $(CONFIG) --reject $(VERSION) --by "$(BY)" --note "$(NOTE)"

verify-audit: $(STAMP) ## Check the hash chains of logs/audit.jsonl and the deployment history
	$(PY) fullprocess.py --config $(CONFIG) --verify-audit

rollback: $(STAMP) ## Make the previous deployed version current again
	$(PY) deployment.py --config $(CONFIG) --rollback

activate: $(STAMP) ## Make any verified version current again: make activate VERSION=vN
	@test -n "$(VERSION)" || { echo "usage: make activate VERSION=vN (make versions lists them)" >&2; exit 2; }
	$(PY) deployment.py --config $(CONFIG) --activate $(VERSION)

diagnostics: $(STAMP) ## Diagnose the current version; print and save reports/<version>/diagnostics.json
	$(PY) diagnostics.py --config $(CONFIG)

report: $(STAMP) ## Write reports/<version>/: confusion matrix, model report PDF and JSON (VERSION=vN for another)
	$(PY) reporting.py --config $(CONFIG) $(if $(VERSION),--version $(VERSION))

run: data ## Set up, make the sample data and run the cron entry (fullprocess) once
	$(PY) fullprocess.py --config $(CONFIG)

demo-drift: run ## Drop the shifted sample month into sourcedata/ (its hold-out into testdata/) and run fullprocess: drift, retrain, redeploy
	$(PY) sampledata.py --config $(CONFIG) --shifted-month
	$(PY) fullprocess.py --config $(CONFIG)
	$(PY) deployment.py --config $(CONFIG) --list

demo-outcomes: run ## Drop the labelled outcome of clients on the first call list (the shifted sample month) into sourcedata/, run fullprocess, show the back-test and write reports/outcomes.pdf
	$(PY) sampledata.py --config $(CONFIG) --shifted-month
	$(PY) fullprocess.py --config $(CONFIG)
	$(PY) reporting.py --config $(CONFIG) --outcomes

serve: $(STAMP) ## Serve the API and the Risk-O-Meter page under gunicorn (127.0.0.1, api_url's port; Ctrl-C stops)
	RISK_API_CONFIG=$(CONFIG) $(VENV)/bin/gunicorn --config gunicorn.conf.py

apicalls: $(STAMP) ## Call every endpoint of the running API (make serve); answers in apireturns.txt
	$(PY) apicalls.py --config $(CONFIG)

lint: $(DEV_STAMP) ## ruff (check and format) and import-linter's layers contract (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint ## Lint, then run the test suite (TEST_WORKERS processes, default one per core)
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: $(DEV_STAMP) ## The edit-test loop: the tests not marked slow
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

bench: $(STAMP) ## Run the benchmarks and print ratios against same-run baselines
	$(PY) benchmarks/run.py

clean: ## Remove generated data, models, deployments, reports and logs (keeps .venv)
	rm -rf sourcedata ingesteddata testdata sample_batches sample_holdout clientbook calllists models production_deployment reports logs apireturns.txt
