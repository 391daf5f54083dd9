# The README's commands. Everything is installed by these targets: a fresh
# machine needs only python3 (with venv) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Hypothesis's caches live with the build, not in the checkout.
export HYPOTHESIS_STORAGE_DIRECTORY := $(VENV)/hypothesis

.PHONY: run demo-reset test lint bench chaos mutation clean system-deps

$(BIN)/python:
	@echo "Creating $(VENV) (first run only)..."
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when a requirements file changes. The first run spends most of
# its time here, so it says so rather than sitting silent.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	@echo "Installing dependencies into $(VENV) (first run, or requirements.txt changed; about 10-30 s)..."
	@scripts/install-requirements.sh $(VENV) requirements.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements-demo.txt $(VENV)/.runtime
	@echo "Installing test dependencies into $(VENV) (first run, or requirements-dev.txt changed)..."
	@scripts/install-requirements.sh $(VENV) requirements-dev.txt
	@touch $@

# Demo mode's Stripe emulator (localstripe, aiohttp): not a production dependency, so installed
# only when a demo first needs it.
$(VENV)/.demo: requirements-demo.txt $(VENV)/.runtime
	@echo "Demo mode: installing the local Stripe emulator (localstripe, aiohttp; first demo run only)..."
	@scripts/install-requirements.sh $(VENV) requirements-demo.txt
	@touch $@

# Without STRIPE_SECRET_KEY `make run` is the demo, which needs the emulator.
DEMO_DEPS := $(if $(STRIPE_SECRET_KEY),,$(VENV)/.demo)

## run: set up and start the service (demo mode with localstripe when STRIPE_SECRET_KEY is unset)
run: $(VENV)/.runtime $(DEMO_DEPS)
	$(BIN)/python -m devtools.run

## demo-reset: forget the demo (its database, the emulator's objects, its credentials) and start it afresh
demo-reset: $(VENV)/.runtime $(VENV)/.demo
	$(BIN)/python -m devtools.run --reset

# Debian packages the tests use (redis-server, postgresql, chromium): installed once, skipped when present.
system-deps:
	@scripts/install-system-deps.sh

## test: set up and run the whole test suite (`PYTEST_ARGS='-m "not browser"'` leaves out Chromium's)
# The browser tests' axe-core is committed (tests/browser/vendor/axe.min.js, MPL-2.0 header kept),
# not fetched here with npm: a clean clone's `make test` then needs no Node.js and no registry for
# it, and runs the very bytes that were reviewed (pinned by sha256 in tests/browser/support.py;
# scripts/update-axe.sh refreshes it).
test: $(VENV)/.dev system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff check, ruff format --check and mypy over kamiyo/ (CI runs it before the tests)
lint: $(VENV)/.dev
	$(BIN)/ruff check kamiyo
	$(BIN)/ruff format --check kamiyo
	$(BIN)/mypy

## chaos: thousands of randomized fault schedules against several workers, SQLite and PostgreSQL
## (CHAOS_SCHEDULES per database, default 1000; first seed CHAOS_SEED_BASE, default the clock;
## replay one failing schedule with CHAOS_SEED=<seed>)
chaos: $(VENV)/.dev system-deps
	CHAOS_SCHEDULES=$${CHAOS_SCHEDULES:-1000} CHAOS_SEED_BASE=$${CHAOS_SEED_BASE:-$$(date +%s)} \
		$(BIN)/python -m pytest tests/chaos -q -p no:cacheprovider $(PYTEST_ARGS)

## bench: run the benchmarks (ratios against a baseline measured in the same run)
bench: $(VENV)/.dev system-deps
	$(BIN)/python -m bench $(BENCH)

## mutation: mutmut over kamiyo/payments/, webhooks/inbox.py and webhooks/verify.py; prints the
## surviving mutants. Not in CI: hours on a small machine. One module: MUTANTS='kamiyo.webhooks.verify*'.
## Results stay in mutants/ (a changed function's are redone); `make clean` drops them.
mutation: $(VENV)/.dev system-deps
	$(BIN)/pip install --quiet --disable-pip-version-check mutmut==3.8.1
	$(BIN)/mutmut run $(MUTANTS) || true
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis mutants artifacts
