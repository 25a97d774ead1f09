# The README's two commands. Everything else is CMake.
#   make run    install missing packages, build, serve examples/status-app on ./chronicle.db
#   make test   install what tests need, build normal + ASan/UBSan, run every test
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
PORT ?= 8080

.PHONY: run test build build-asan deps deps-test clean bench bench-peers

deps:
	@scripts/deps.sh run

deps-test:
	@scripts/deps.sh test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps-test
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCHRONICLE_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/chronicle serve --app examples/status-app/app.json --database sqlite:./chronicle.db --listen 127.0.0.1:$(PORT)

test: deps-test build build-asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

bench: build
	@scripts/deps.sh bench
	./$(BUILD)/bench_append --dir $${TMPDIR:-/tmp}
	bench/http.sh
	bench/status-app.sh
	./$(BUILD)/bench_consumer_catchup --dir $${TMPDIR:-/tmp}
	CHRONICLE_BIN=./$(BUILD)/chronicle bench/consumer_latency.py

# chronicle on PostgreSQL next to the peers in ../shared/peers (bench/README.md)
bench-peers: build
	bench/peers.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
