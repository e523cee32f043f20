# blapi — the verbs. `make demo` runs the business flow on the local stack; `make test` runs
# every test against it. Both install what they need (dev tools into .venv/, pinned).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
MOTO_PORT   ?= 4599
STRIPE_PORT ?= 8420
LAMBDA_PORT ?= 9001
export MOTO_PORT STRIPE_PORT LAMBDA_PORT
export BLAPI_MOTO_URL   := http://127.0.0.1:$(MOTO_PORT)
export LOCALSTRIPE_URL  := http://127.0.0.1:$(STRIPE_PORT)
export PATH             := $(CURDIR)/$(BIN):$(PATH)
# Tests and tools talk to the emulator only; never to a real AWS account.
export AWS_REGION := us-east-1
export AWS_ACCESS_KEY_ID := test
export AWS_SECRET_ACCESS_KEY := test
export CARGO_TERM_COLOR ?= never

FUNCTIONS := webhook-intake usage-billing license-minting lead-enrichment customer-sync revenue-ops privacy-requests portal-api notifications

.PHONY: help setup build test lint audit fmt up down functions demo bench bench-billing soak deploy ops fuzz fuzz-smoke $(addprefix invoke-,$(FUNCTIONS))

help: ## this list
	@grep -E '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18
	@printf '%-18s%s\n' 'invoke-<fn>' 'run one function on a sample event: make invoke-webhook-intake [EVENT=events/...]' 

setup: $(VENV)/.installed ## install the pinned dev tools (moto, localstripe, cargo-lambda, cfn-lint) into .venv/

$(VENV)/.installed: infra/requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

build: ## build every function and tool (debug)
	cargo build --all-targets

test: setup ## unit + integration + end-to-end tests against the local stack (started and stopped here)
	cargo build --workspace --bins --tests  # one feature set with `cargo test` (dev-deps on), so nothing is compiled twice
	infra/stack.sh run cargo test --no-fail-fast

lint: setup ## rustfmt check, clippy -D warnings, cfn-lint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/cfn-lint --include-checks I -- template.yaml

audit: ## advisories (RustSec), licences, duplicates, sources of Cargo.lock (cargo-deny); offline: ADVISORY_DB=<clone of rustsec/advisory-db>
	@[ -x $(BIN)/cargo-deny ] || cargo install --locked --quiet --root $(VENV) cargo-deny@0.20.2
	infra/audit.sh

fmt: ## format the code
	cargo fmt --all

up: setup ## start moto + localstripe and provision template.yaml into them
	infra/stack.sh start
	cargo build --quiet -p blapi-infra --bin blapi-local
	target/debug/blapi-local up

down: ## stop everything `make up` / `make demo` started
	infra/stack.sh stop

demo: setup ## run the whole business flow on the local stack (leaves it running; `make down` stops it)
	@echo "== 1/5 local stack: moto + localstripe, provisioned from template.yaml"
	infra/stack.sh start
	cargo build --workspace --bins --tests  # one feature set with `cargo test` (dev-deps on), so nothing is compiled twice
	target/debug/blapi-local up
	@echo "== 2/5 functions under cargo lambda watch (port $(LAMBDA_PORT)) + the event-source mapper"
	infra/stack.sh functions
	@echo "== 3/5 the scenario"
	target/debug/blapi-demo
	@echo "== 4/5 the operator's view of the dead-letter queues (blapi-ops dlq list; 'make ops ARGS=\"dlq redrive QUEUE\"' moves them back)"
	target/debug/blapi-ops dlq list
	@echo "== 5/5 done: the stack is still up for a look around; 'make down' stops it" 

ops: ## the operator's command line on the local stack: make ops ARGS="dlq list" (or target/debug/blapi-ops --stack NAME ...)
	cargo build --quiet -p blapi-ops
	target/debug/blapi-ops $(ARGS)

bench: setup ## measure size, cold start, memory and hot paths; writes target/bench/report.md
	infra/stack.sh run bench/run.sh

bench-billing: setup ## a month of a 10 000-customer business through usage-billing on the local stack (target/bench/month.md)
	cargo test --quiet -p usage-billing --bench month --no-run
	BENCH_MONTH_CUSTOMERS=$${BENCH_MONTH_CUSTOMERS:-10000} RUST_LOG=$${RUST_LOG:-warn} infra/stack.sh run cargo test --quiet -p usage-billing --bench month

SOAK_SECONDS ?= 600
SOAK_RATE    ?= 10
soak: setup ## mixed signed traffic at SOAK_RATE/s for SOAK_SECONDS on a stack of its own, then the accounting (target/soak/report.md; not in `make test`)
	cargo build --workspace --bins --tests  # the functions and the soak driver, one feature set with `cargo test`
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_RATE=$(SOAK_RATE) infra/stack.sh run target/debug/blapi-soak

FUZZ_SECONDS ?= 60
fuzz: ## fuzz every parser and verifier for FUZZ_SECONDS each (default 60; nightly, cargo-fuzz into .venv/); fails on a crash
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

fuzz-smoke: ## build every fuzz target unoptimised and run each for 5 s (CI); fails on a crash
	FUZZ_SECONDS=5 FUZZ_PROFILE=dev fuzz/run.sh

functions: up ## run the functions under cargo lambda watch and the event-source mapper
	infra/stack.sh functions

# The intake's committed samples are signed at a fixed clock (replay-protected): its default
# event is signed afresh, with a fresh id, each time.
$(addprefix invoke-,$(FUNCTIONS)): invoke-%: functions
	@if [ "$*" = webhook-intake ] && [ -z "$(EVENT)" ]; then \
	  cargo run --quiet -p webhook-intake --example sign-events -- --now --fresh --out target/events/webhook-intake; fi
	$(BIN)/cargo-lambda lambda invoke $* -A 127.0.0.1 -P $(LAMBDA_PORT) \
	  --data-file $(or $(EVENT),$(if $(filter webhook-intake,$*),target/events/webhook-intake/default.json,events/$*/default.json))

deploy: ## build and deploy to AWS with SAM (needs AWS credentials and the SAM CLI; never run in CI)
	sam build --beta-features
	sam deploy --guided
