# Tokenbill: `make dev` runs everything locally, `make test` runs every test.
# Both bring up the local stack (DynamoDB Local + moto) on free loopback
# ports and stop it afterwards, pass or fail.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
STACK := infra/local-stack/stack.sh
TEST_LOG := target/test-output.log
CARGO ?= cargo
DEV_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help dev test bench test-unit install validate stack-up stack-down stack-status fmt lint

help:
	@echo "make dev           run the whole system on http://127.0.0.1:3000 (Ctrl-C stops it)"
	@echo "make test          run every test against the local stack"
	@echo "make test-unit     run only the tests that need no local stack"
	@echo "make stack-up      start DynamoDB Local + moto and keep them (source .local-stack/env)"
	@echo "make stack-down    stop them"
	@echo "make bench         balance operations per second vs raw DynamoDB transactions"
	@echo "make validate      sam validate --lint on template.yaml"
	@echo "make lint | fmt    clippy with warnings as errors | rustfmt"

dev:
	$(STACK) run -- $(CARGO) run --locked -p tokenbill-dev -- $(DEV_ARGS)

test: validate
	@mkdir -p target
	$(STACK) run -- $(CARGO) test --workspace --locked 2>&1 | tee $(TEST_LOG)
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' $(TEST_LOG)

# Figures, not pass/fail: see docs/performance.md.
bench:
	$(STACK) run -- $(CARGO) run --locked --profile bench-tool -p tokenbill-bench -- $(BENCH_ARGS)

test-unit:
	$(CARGO) test --locked -p tokenbill

install:
	$(STACK) install

# The SAM template, checked offline (aws-sam-cli lives in the project venv).
validate: install
	SAM_CLI_TELEMETRY=0 .venv/bin/sam validate --lint

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
