# `make demo` replays a generated stream through the module; `make test` runs every test.
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
MODULE := clickstream-aggregation.wasm

.PHONY: broker-install build flink shared-build test lint demo dashboard bench fuzz fuzz-check wasm-target clean up down test-redpanda

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# The same build as `rpk transform build`: release, wasm32-wasip1, SIMD on, module copied next to transform.yaml.
build: wasm-target
	RUSTFLAGS=-Ctarget-feature=+simd128 $(CARGO) build --release --target $(WASM_TARGET)
	cp target/$(WASM_TARGET)/release/clickstream-aggregation.wasm $(MODULE)

# Every test runs beside a Kafka-protocol broker (tansu, on a free loopback port, stopped at the end) for
# the live pipeline tests; they are compiled first, while tansu's first install may still be going. The
# container tests (their own package, so the container stack's features stay out of the build the demo
# shares) run on their own with --nocapture, so their SKIPPED line shows where Docker is missing.
# tests/tests/flink.rs compares the module with Flink SQL itself, run by the Python `make flink` makes.
test: broker-install build shared-build fuzz-check lint
	$(CARGO) test --workspace --exclude container-tests --no-run
	./.ci/flink > target/flink-python
	FLINK_PYTHON=$$(cat target/flink-python) ./.ci/with-broker $(CARGO) test --workspace --exclude container-tests
	$(CARGO) test -p container-tests -- --nocapture

# A Python with Apache Flink 2.3 (in target/flink-venv; Java 17 installed if missing) for the Flink comparison.
flink:
	@./.ci/flink

# Fails when the tests would compile again something the demo built (a feature one of their
# dependencies adds): compares cargo's plans, compiles nothing.
shared-build:
	@./.ci/shared-build

# Starts installing the test broker (tansu) while the workspace builds, when it is missing.
broker-install:
	@./.ci/with-broker --install-in-background

# Formatting and clippy, every warning an error (the lint levels are in Cargo.toml's [workspace.lints]).
lint:
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

clean:
	$(CARGO) clean
	rm -f $(MODULE)

HARNESS := target/debug/harness
DEMO_DIR := demo-out
# Only the harness binary; the tests' dependencies enable no feature it lacks (checked by
# `make shared-build`, part of `make test`), so `make test` reuses all of it.
BUILD_HARNESS := $(CARGO) build -p harness --bin harness

# Generate 30 minutes of a realistic clickstream (with some disorder, late and malformed records),
# replay it through the module as the broker would, and show the busiest groups.
demo: build
	$(BUILD_HARNESS)
	@mkdir -p $(DEMO_DIR)
	$(HARNESS) generate --seed 42 --events 36000 --users 200 --event-rate 20 --jitter 3s \
		--late-percent 0.5 --malformed-percent 0.5 --output $(DEMO_DIR)/clickstream.jsonl
	$(HARNESS) replay --wasm $(MODULE) --transform-yaml transform.yaml --input $(DEMO_DIR)/clickstream.jsonl \
		--partitions 3 --shards 2 --output $(DEMO_DIR)/clickstream_aggregated.jsonl \
		--dlq $(DEMO_DIR)/clickstream_dlq.jsonl --logs $(DEMO_DIR)/module.log --top 10
	@echo "rows: $(DEMO_DIR)/clickstream_aggregated.jsonl  dead letters: $(DEMO_DIR)/clickstream_dlq.jsonl  module log: $(DEMO_DIR)/module.log"

# The dashboard the window analytics make, on the demo's stream: of each five-minute window, the five pages
# with the most unique visitors (Window Top-N over count_distinct), with the 95th percentile of time on site.
DASHBOARD_SETTINGS := --env GROUP_BY=url --env TOP_N=5 --env TOP_N_RANK_FIELD=rank \
	--env 'AGGREGATES=visitors=count_distinct(user_id),p95_seconds=percentile(on_site_seconds, 0.95),views=count'
dashboard: build
	$(BUILD_HARNESS)
	@mkdir -p $(DEMO_DIR)
	$(HARNESS) generate --seed 42 --events 36000 --users 200 --event-rate 20 --jitter 3s \
		--late-percent 0.5 --malformed-percent 0.5 --output $(DEMO_DIR)/clickstream.jsonl
	$(HARNESS) replay --wasm $(MODULE) --transform-yaml transform.yaml --input $(DEMO_DIR)/clickstream.jsonl \
		--partitions 3 --shards 2 $(DASHBOARD_SETTINGS) --output $(DEMO_DIR)/dashboard.jsonl --quiet --top 5

# Benchmarks (not tests): each workload through the native record handler and the module in the harness,
# one table, after the README's previous one. The same build as the demo and the tests.
bench: build
	$(BUILD_HARNESS)
	$(CARGO) run --quiet -p integration-tests --bin bench

# Fuzz the record handler with libFuzzer (cargo-fuzz; --sanitizer none and RUSTC_BOOTSTRAP=1 let it run
# on the stable toolchain). FUZZ_SECONDS=600 make fuzz for a longer run.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run record_handler --sanitizer none -- -max_total_time=$(FUZZ_SECONDS)

# The fuzz target is its own workspace; keep it compiling.
fuzz-check:
	cd fuzz && $(CARGO) check --quiet

# The seed's local stack in Docker (docker-compose.yml): Redpanda with transforms, the topics, the
# transform deployed, the producer. The module is built here and mounted (a .wasm runs anywhere); the
# producer's harness is built inside Docker (Dockerfile), rebuilt when the sources change.
up: build
	docker compose up -d --build
	@echo "live table: docker compose exec producer harness consume --brokers redpanda:9092 --top 10"

down:
	docker compose down -v

# The tests against a real Redpanda in Docker; unlike `make test`, fails when Docker is missing.
test-redpanda: build
	$(BUILD_HARNESS)
	REQUIRE_DOCKER=1 $(CARGO) test -p container-tests -- --nocapture
