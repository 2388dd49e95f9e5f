# The seed's producer for `make up` (docker-compose.yml): the harness, built inside Docker from the workspace
# sources, so the stack runs on any Docker host; a binary built on the host is of the wrong kind on macOS and
# must match the runtime's C library on Linux. The wasm module is not built here: it is portable, and
# `make build` makes the one compose mounts.

# The workspace's rust-version, on the Debian release of the runtime stage (the binary links its glibc).
FROM rust:1.95.0-slim-bookworm AS build
# rdkafka-sys builds librdkafka from its bundled sources: its configure requires a C and a C++ compiler,
# and `make` builds it. gcc and libc6-dev come with the image; without zlib headers, libz-sys builds its
# bundled zlib, which librdkafka then compiles against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every workspace member: cargo loads them all, even to build one package.
COPY Cargo.toml Cargo.lock ./
COPY transform transform
COPY host host
COPY harness harness
COPY tests tests
COPY container-tests container-tests
# The workspace's release profile is the wasm module's (fat LTO, one codegen unit): the producer needs
# neither, and both slow the build.
ENV CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# The caches keep crates and build output between builds; the binary leaves the cached target dir by `cp`.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p harness --locked \
    && cp target/release/harness /usr/local/bin/harness

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/harness /usr/local/bin/harness
CMD ["harness", "--help"]
