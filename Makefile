# UBSCore commands. The two a newcomer needs: `make run` and `make test`.
# Everything installs on first use: a virtualenv in .venv, the JVM stack under stack/*/lib.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKERS ?= 1
PYTEST_ARGS ?=

.PHONY: install run test test-secure unit integration stack-up stack-down stack-status stack-reset stack-up-secure stack-down-secure tools bench bench-quick bench-secure bench-backlog bench-sensor bench-recovery bench-holds simulate chaos compose-check monitoring-check lint mutate clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,tools,bench]'
	@touch $(STAMP)

## install: the Python package and its test tools, into .venv
install: $(STAMP)

## tools: kcat and cqlsh for the examples of docs/cli.md and docs/trading.md
tools: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" stack/bin/install-tools

## stack-up / stack-down / stack-status / stack-reset: Kafka + Cassandra alone
stack-up:
	stack/bin/stack up

stack-down:
	stack/bin/stack down

stack-status:
	stack/bin/stack status

stack-reset:
	stack/bin/stack reset

## stack-up-secure / stack-down-secure: the secured Kafka (SASL_SSL, SCRAM, ACLs) + Cassandra (TLS, passwords) beside it; clients source .stack/secure/env
stack-up-secure:
	stack/bin/stack up --secure

stack-down-secure:
	stack/bin/stack down --secure

## run: install, start the stack, then WORKERS workers (default 1) in the foreground
run: install stack-up
	@echo "Ctrl-C stops the workers; 'make stack-down' stops Kafka and Cassandra"
	@if [ "$(WORKERS)" = "1" ]; then exec $(VENV)/bin/ubscore worker -l info; \
	else exec $(VENV)/bin/ubscore workers $(WORKERS); fi

## test: install, start the stack if needed, run the whole suite; then the secured part (test-secure)
test: install stack-up
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-secure

## test-secure: start the secured stack if needed; its refusals, and the pipeline end to end on it
SECURE_TESTS ?= $(addprefix tests/integration/,test_secured_cluster.py test_stack.py test_pipeline.py \
	test_api_keys.py test_roles.py test_cli.py test_cql_rows.py test_trades.py test_assets.py \
	test_broker_time.py test_retention.py test_bulk_recovery.py test_crash.py test_gateway_tls.py \
	test_gateway_safety.py)
test-secure: install stack-up-secure
	set -a && . .stack/secure/env && set +a && \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(SECURE_TESTS) $(PYTEST_ARGS)

## lint: ruff (style, imports, private access) and mypy on app/ and bench/
lint: install
	$(VENV)/bin/ruff check app tests bench tools
	$(VENV)/bin/ruff format --check app tests bench tools
	$(VENV)/bin/mypy app bench

## unit: the tests that need no stack
unit: install
	$(PY) -m pytest tests/unit tests/agents tests/sink tests/tools $(PYTEST_ARGS)

## mutate: break the money rules one at a time in a copy; the unit, agent and sink tests must notice each
mutate: install
	$(PY) tools/mutate.py

## bench: throughput against raw baselines, open-loop latency, recovery; writes bench/results/ (~20 min)
bench: tools stack-up
	$(PY) -m bench.run

## bench-quick: the same in under 5 minutes (two latency rates of 8 s, 20k accounts)
bench-quick: tools stack-up
	BENCH_QUICK=1 $(PY) -m bench.run

## bench-secure: what SASL_SSL and CQL TLS + logins cost: bench.pipeline and bench.backlog on both stacks, side by side (~20 min)
bench-secure: tools stack-up stack-up-secure
	$(PY) -m bench.secure

## bench-backlog: one ledger worker working through a pre-filled backlog, alone on the machine
bench-backlog: install stack-up
	$(PY) -m bench.backlog

## bench-sensor: Faust's monitoring per message: plain Monitor, the stock Prometheus sensor, UBSCore's
bench-sensor: install
	$(PY) -m bench.sensor

## bench-holds: us per operation for a user with 10 and with 50,000 open holds, this code beside HOLDS_BASELINE
## (a git worktree of HOLDS_BASELINE_COMMIT, added when missing); no stack needed
HOLDS_BASELINE ?= /tmp/holds-old
HOLDS_BASELINE_COMMIT ?= f32973c
bench-holds: install
	@test -d $(HOLDS_BASELINE) || git worktree add --detach $(HOLDS_BASELINE) $(HOLDS_BASELINE_COMMIT)
	$(PY) -m bench.holds --baseline $(HOLDS_BASELINE)

## bench-recovery: time to ready for 100k and 1M accounts, with and without local RocksDB files
bench-recovery: install stack-up
	$(PY) -m bench.recovery

## simulate: the deterministic simulator: SEEDS seeded runs of the ledger agent under kills, redeliveries and retention (default 2000)
SEEDS ?= 2000
simulate: install
	$(PY) -m tests.simulator --seeds $(SEEDS)

## chaos: the long fault-injection suite (20 seeded runs of 20k operations each, ~1 h); prints and writes its table
CHAOS_ARGS ?= --runs 20 --ops 20000 --seed 1
CHAOS_TABLE ?= chaos-table.md
chaos: install stack-up
	$(PY) -m tests.integration.chaos $(CHAOS_ARGS) --quiet --table $(CHAOS_TABLE)

## compose-check: validate docker/compose.yml without a Docker engine
compose-check:
	docker/validate

## monitoring-check: promtool on the Prometheus config, rules, rule tests and dashboard queries; then each alert one machine can provoke, in a real Prometheus against live workers (starts the stack if needed)
monitoring-check: install stack-up
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" docker/check-monitoring --live $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis *.egg-info
