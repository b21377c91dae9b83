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
.PHONY: help dev test bench test-unit install validate build stack-up stack-down stack-status fmt lint fuzz

help:
	@echo "make dev           run the whole system on http://127.0.0.1:3000 (Ctrl-C stops it)"
	@echo "make test          run every test against the local stack"
	@echo "make test-unit     run only the tests that need no local stack"
	@echo "make stack-up      start DynamoDB Local + moto and keep them (source .local-stack/env)"
	@echo "make stack-down    stop them"
	@echo "make bench         every figure of docs/performance.md (throughput, latency, sweep, cold starts)"
	@echo "make fuzz          every cargo-fuzz target for FUZZ_SECONDS (default 60) each; see docs/reliability.md"
	@echo "make validate      sam validate --lint on template.yaml"
	@echo "make build         sam build: one arm64 bootstrap per function (offline, no Docker), sizes checked"
	@echo "make lint | fmt    clippy with warnings as errors | rustfmt"

dev:
	$(STACK) run -- $(CARGO) run --locked -p tokenbill-dev -- $(DEV_ARGS)

test: validate
	@mkdir -p target
	$(STACK) run -- $(CARGO) test --workspace --locked 2>&1 | tee $(TEST_LOG)
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' $(TEST_LOG)

# Figures, not pass/fail: see docs/performance.md. The functions' native
# release binaries (and the hello-world baseline) are built first: the bench
# starts each against a local Lambda Runtime API.
BENCH_FUNCTIONS := telegram-webhook payment-webhook notifier renewal-sweep spend-api hello-lambda
bench:
	$(CARGO) build --locked --release $(addprefix -p ,$(BENCH_FUNCTIONS))
	$(STACK) run -- $(CARGO) run --locked --profile bench-tool -p tokenbill-bench -- $(BENCH_ARGS)

test-unit:
	$(CARGO) test --locked -p tokenbill

install:
	$(STACK) install

# The SAM template, checked offline (aws-sam-cli lives in the project venv).
validate: install
	SAM_CLI_TELEMETRY=0 .venv/bin/sam validate --lint

# The deployable binaries: `sam build` runs `cargo lambda build --release
# --arm64 --bin NAME` for every function (cargo-lambda and its zig linker
# live in the project venv), then every bootstrap must be an arm64 ELF of at
# most 8 MiB. Needs no Docker and no network once crates are fetched. Not
# part of `make test`: it needs the aarch64 standard library.
LAMBDA_TARGET := aarch64-unknown-linux-gnu
MAX_BOOTSTRAP_BYTES := 8388608
build: install
	@sysroot="$$(rustc --print sysroot)"; \
	if [ ! -d "$$sysroot/lib/rustlib/$(LAMBDA_TARGET)/lib" ]; then \
	  echo "make build: the Rust standard library for $(LAMBDA_TARGET) is not installed." >&2; \
	  echo "Add it once with:  rustup target add $(LAMBDA_TARGET)" >&2; \
	  exit 1; \
	fi
	PATH="$(CURDIR)/.venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam build
	@want=$$(ls -d functions/*/Cargo.toml | wc -l); count=0; fail=0; \
	printf '%-28s %10s %9s\n' function bytes MiB; \
	for bin in .aws-sam/build/*/bootstrap; do \
	  [ -f "$$bin" ] || continue; \
	  name=$$(basename "$$(dirname "$$bin")"); bytes=$$(stat -c %s "$$bin"); count=$$((count + 1)); \
	  awk -v n="$$name" -v b="$$bytes" 'BEGIN { printf "%-28s %10d %9.2f\n", n, b, b / 1048576 }'; \
	  if [ "$$(od -An -tx1 -j18 -N2 "$$bin" | tr -d ' ')" != "b700" ]; then \
	    echo "  $$bin is not an arm64 (aarch64) ELF executable" >&2; fail=1; fi; \
	  if [ "$$bytes" -gt $(MAX_BOOTSTRAP_BYTES) ]; then \
	    echo "  $$bin is over the 8 MiB limit ($(MAX_BOOTSTRAP_BYTES) bytes)" >&2; fail=1; fi; \
	done; \
	if [ "$$count" -ne "$$want" ]; then \
	  echo "expected $$want bootstraps (one per crate under functions/), found $$count" >&2; fail=1; fi; \
	exit $$fail

# Fuzzing (docs/reliability.md): each cargo-fuzz target under fuzz/ for
# FUZZ_SECONDS, starting from its committed seeds (fuzz/corpus/<target>);
# what a run learns is kept under the target dir, out of git. A crash stops
# the run with its input in fuzz/artifacts/<target>/. The sanitizer flags
# need nightly features: RUSTC_BOOTSTRAP lets the stable toolchain use them.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= robokassa_callback mock_callback spend_request telegram_update
FUZZ_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p $(FUZZ_DIR)
	@: > $(FUZZ_DIR)/summary.txt
	@for target in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$target; \
	  echo "== $$target: $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --target-dir $(FUZZ_DIR) $$target \
	    $(FUZZ_DIR)/corpus/$$target fuzz/corpus/$$target -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 2>&1 | tee $(FUZZ_DIR)/$$target.log; \
	  awk -v t=$$target '/DONE/ { done = $$0 } /stat::number_of_executed_units/ { execs = $$2 } \
	    END { match(done, /cov: [0-9]+/); cov = substr(done, RSTART + 5, RLENGTH - 5); \
	          match(done, /corp: [0-9]+/); corp = substr(done, RSTART + 6, RLENGTH - 6); \
	          printf "%-20s %8s s %12s execs %6s edges %6s inputs  no crash\n", t, "$(FUZZ_SECONDS)", execs, cov, corp }' \
	    $(FUZZ_DIR)/$$target.log >> $(FUZZ_DIR)/summary.txt; \
	done
	@cat $(FUZZ_DIR)/summary.txt

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
