# The front door: `make run` starts the whole service, `make test` runs the suite.
# Where DATABASE_URL / REDIS_URL are unset, embedded PostgreSQL and Redis are started under var/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
WITH_SERVICES := $(BIN)/python -m project.embedded run --

.PHONY: run test lint format bench bench-videos bench-estimates bench-events chaos fuzz stop clean messages

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	DEBUG=$${DEBUG:-1} $(WITH_SERVICES) $(BIN)/python manage.py runstack

test: $(STAMP)
	$(WITH_SERVICES) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DEBUG=1 $(WITH_SERVICES) $(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

messages: $(STAMP)
	DEBUG=1 $(WITH_SERVICES) $(BIN)/python manage.py makemessages -l pt_BR --ignore=.venv --ignore=var
	DEBUG=1 $(WITH_SERVICES) $(BIN)/python manage.py makemessages -d djangojs -l pt_BR --ignore=.venv --ignore=var
	DEBUG=1 $(WITH_SERVICES) $(BIN)/python manage.py compilemessages --ignore=.venv

# Benchmarks and the chaos and fuzz proofs: each uses a database and Redis prefix of its own (chaos and fuzz
# even servers of their own) and writes its figures to bench/results/. See docs/benchmarks.md and docs/chaos.md.
bench: $(STAMP)
	$(WITH_SERVICES) $(BIN)/python -m bench.images $(BENCH_ARGS)

bench-videos: $(STAMP)
	$(WITH_SERVICES) $(BIN)/python -m bench.videos $(BENCH_ARGS)

bench-estimates: $(STAMP)
	$(WITH_SERVICES) $(BIN)/python -m bench.estimates $(BENCH_ARGS)

bench-events: $(STAMP)
	$(WITH_SERVICES) $(BIN)/python -m bench.events $(BENCH_ARGS)

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(BENCH_ARGS)

fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz $(BENCH_ARGS)

stop:
	$(BIN)/python -m project.embedded stop

clean: stop
	rm -rf var
