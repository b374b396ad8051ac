# stock_nbs: two set-up commands, `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pip reaches the package index only; its "Location ... is ignored" lines are noise here
PIP_QUIET := 2>&1 | grep -v "is ignored" || true

.PHONY: install demo lab readme test check-notebooks nbtest pytest clean-data help drift-eval db db-stop bench faults

help:
	@echo "make demo   - install, then run the daily pipeline (papermill notebook) offline on the synthetic source for the default universe"
	@echo "make lab    - JupyterLab on the project (127.0.0.1, the venv's kernel); prints the URL with its token"
	@echo "make readme - write README.md from nbs/index.ipynb (make test fails when they differ)"
	@echo "make test   - install, check notebooks are clean and the library matches them, run nbdev-test and pytest"
	@echo "make drift-eval - false-alarm and detection rates of the drift monitor on simulated data"
	@echo "make bench  - stock_nbs next to a plain polars reference at 5,000 tickers x 10 years: rebuild, day, reads, daily run"
	@echo "make faults - fault-injection campaign: kill -9 during builds, database restarts mid-sync, secrets in every DSN form (~4 min)"
	@echo "make db     - start a local PostgreSQL (.pgdata/, port 5433 or PORT=N) to try sync; make db-stop stops it"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,cluster,lab]" $(PIP_QUIET)
	$(BIN)/python -c "import stock_nbs.cli, nbdev, pytest, xdist, ray, upath, s3fs, moto, jupyterlab"
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/stock-nbs run --settings settings.ini --source synthetic

# JupyterLab on this folder, the venv's kernel, 127.0.0.1; prints the URL with its token
lab: install
	$(BIN)/stock-nbs lab --settings settings.ini

# README.md is written from nbs/index.ipynb (edit the notebook, run it, then this)
readme: install
	$(BIN)/python tools/readme.py

# nbdev-clean and nbdev-export must change nothing: notebooks are the source of truth and stay clean.
check-notebooks: install
	@before=$$(find nbs stock_nbs -type f \( -name '*.ipynb' -o -name '*.py' \) | sort | xargs sha1sum); \
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export; \
	after=$$(find nbs stock_nbs -type f \( -name '*.ipynb' -o -name '*.py' \) | sort | xargs sha1sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-clean/nbdev-export changed these files (notebooks unclean or library out of sync); review and commit them:"; \
	  diff <(echo "$$before") <(echo "$$after") | sed -n 's/^> [0-9a-f]*  /  /p'; exit 1; \
	else echo "notebooks clean, library in sync"; fi
	$(BIN)/python tools/readme.py --check

# daily_run and dashboard are driven by papermill and Voila in tests/, not executed by nbdev-test
nbtest: install
	cd nbs && ../$(BIN)/nbdev-test --n-workers 2 --skip-file-re '^(daily_run|dashboard)\.ipynb$$'

# A throwaway PostgreSQL for the database tests (tools/pg.sh); without server binaries the database tests
# skip locally and fail in CI (CI=true). Two workers, a test file each at a time (module fixtures built once):
# most tests wait on kernels, browsers and servers, so two overlap well; the dashboard's
# file goes first (tests/conftest.py) so that the other worker takes the rest meanwhile.
pytest: install
	@pgdir=$$(mktemp -d /tmp/stock_nbs_pg.XXXXXX); \
	if url=$$(tools/pg.sh start $$pgdir); then echo "test database: $$url"; export STOCK_NBS_TEST_DATABASE_URL=$$url; \
	else echo "no PostgreSQL for the database tests (install: apt-get install -y postgresql)"; fi; \
	$(BIN)/pytest -n 2 --dist loadfile; rc=$$?; tools/pg.sh stop $$pgdir; rm -rf $$pgdir; exit $$rc

# A local PostgreSQL to try sync without Supabase: data in .pgdata/, stop with `make db-stop`
PORT ?= 5433
db:
	@[ -f .pgdata/data/PG_VERSION ] && echo "already initialised in .pgdata; starting it" ; \
	url=$$(tools/pg.sh start $$PWD/.pgdata $(PORT)) && echo "export DATABASE_URL=$$url   # then: .venv/bin/stock-nbs db migrate && .venv/bin/stock-nbs sync"

db-stop:
	tools/pg.sh stop $$PWD/.pgdata

test: check-notebooks nbtest pytest

# stock_nbs next to a plain polars reference on 5,000 tickers x 10 years: rebuild, incremental day, equality, reads, daily run (~6 min);
# writes reports/bench.json and reports/bench.md
bench: install
	$(BIN)/python tools/bench.py

# kill -9 at random points of a build and its days, the database restarted mid-sync, DATABASE_URL in every form the driver
# accepts: prints the trials and the counts that must all be zero (unreadable tables, failed reruns, rows lost or doubled,
# stray files, secret hits); writes reports/faults.md and reports/faults.json
faults: install
	$(BIN)/python tools/faults.py

# False-alarm and detection rates of the drift monitor on simulated data (~5 min); writes reports/drift_eval.json
drift-eval: install
	$(BIN)/stock-nbs drift-eval --settings settings.ini

clean-data:
	rm -rf data
