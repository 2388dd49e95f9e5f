# `make demo` replays a generated stream through the module; `make test` runs every test.
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
MODULE := clickstream-aggregation.wasm

.PHONY: build test demo wasm-target clean

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# The same build as `rpk transform build`: release, wasm32-wasip1, SIMD on, module copied next to transform.yaml.
build: wasm-target
	RUSTFLAGS=-Ctarget-feature=+simd128 $(CARGO) build --release --target $(WASM_TARGET)
	cp target/$(WASM_TARGET)/release/clickstream-aggregation.wasm $(MODULE)

test: build
	$(CARGO) test --workspace

clean:
	$(CARGO) clean
	rm -f $(MODULE)
