# cepaper: `make book` (the main job) and `make test`. Both install what they need into .venv.
PYTHON  ?= python3.11
PROFILE ?= quick
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# Real data for sections that need it: ../shared/data when it exists, else $CEPAPER_DATA as given.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export CEPAPER_DATA ?= $(SHARED_DATA)
endif
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install book run test test-fast lint format test-unit test-notebooks browser-deps mutate clean
.DEFAULT_GOAL := book

install: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

book: install
	$(BIN)/cepaper book --profile $(PROFILE)

run: install
	$(BIN)/cepaper run --profile $(PROFILE)

test: book browser-deps
	$(MAKE) --no-print-directory lint test-unit test-notebooks

# ruff ([tool.ruff] in pyproject.toml): lint and format checks before the tests, so a failure stops `make test` early.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Both cores (pytest-xdist); a worker that runs out of tests takes some queued on the other (worksteal:
# the tests take from milliseconds to half a minute, and --dist load left one core idle at the end);
# the slowest tests are listed at the end of every run.
JOBS ?= 2
test-unit: install
	$(BIN)/python -m pytest tests -q -n $(JOBS) --dist worksteal --durations=10

# The inner loop: the unit tests that need no built book and start no process (notebook kernels,
# torchrun ranks, executors, the browser, the CLI in a subprocess).
SPAWNING := book/test_pipeline book/test_ranks book/test_notebooks book/test_browser training/test_distributed \
		training/test_executors test_faults test_benchmarks test_install
test-fast: install
	$(BIN)/python -m pytest tests -q -n $(JOBS) --dist worksteal --durations=5 $(SPAWNING:%=--ignore=tests/%.py)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# nbval re-executes the executed quick-profile notebooks, on both cores: one notebook's cells in order in
# one kernel (--dist loadfile). It runs copies whose results go to a scratch store, not over the book's
# published results (which would make the next `make book` execute every section again).
test-notebooks: install
	rm -rf _build/nbval _build/nbval-results
	$(BIN)/python tests/nbval_notebooks.py _build/executed/quick _build/nbval/quick
	CEPAPER_RESULTS=$(abspath _build/nbval-results) $(BIN)/python -m pytest -q --nbval-lax \
		-p no:cacheprovider -p tests.nbval_kernels -n $(JOBS) --dist loadfile _build/nbval/quick/*.ipynb

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml), at low priority; not part of
# `make test`. MUTANTS narrows it to mutant names, e.g. make mutate MUTANTS='cepaper.stats.*';
# MUTATE_JOBS sets the workers. The score and the survivors: `$(BIN)/mutmut results`, `mutmut show NAME`.
MUTANTS     ?=
MUTATE_JOBS ?= 2
mutate: install
	CI=true nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	@$(BIN)/mutmut export-cicd-stats >/dev/null
	@$(BIN)/python -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
	  n = s['total'] - s['skipped']; k = s['killed'] + s['timeout']; \
	  print(f'mutation score {100 * k / max(n, 1):.1f}%: {k} of {n} mutants killed, {s[\"survived\"]} survived, ' \
	        f'{s[\"no_tests\"]} reached by no test')"

# Headless Chromium for the browser test of the book; the test skips (saying why) without it.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"

clean:
	rm -rf _build book/sections results/quick mutants
