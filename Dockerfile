# syntax=docker/dockerfile:1
# Multi-stage build of the one `finstream` binary.
#   docker build -t finstream .
#   docker run --rm finstream --help

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
# Dependency layer: build with the manifests and empty sources first, so code changes do
# not rebuild librdkafka and the rest of the dependency tree.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY broker/Cargo.toml broker/
COPY producer/Cargo.toml producer/
COPY consumer/Cargo.toml consumer/
COPY bench/Cargo.toml bench/
COPY promtext/Cargo.toml promtext/
COPY tests/lazyfs/Cargo.toml tests/lazyfs/
RUN mkdir -p src broker/src producer/src consumer/src bench/src promtext/src tests/lazyfs/src \
 && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > bench/src/main.rs \
 && touch broker/src/lib.rs producer/src/lib.rs consumer/src/lib.rs promtext/src/lib.rs tests/lazyfs/src/lib.rs \
 && touch producer/src/nltk_english_stopwords.txt \
 && cargo build --release -p finstream \
 && rm -rf src broker/src producer/src consumer/src bench/src promtext/src tests/lazyfs/src
COPY . .
RUN touch src/main.rs broker/src/lib.rs producer/src/lib.rs consumer/src/lib.rs promtext/src/lib.rs \
 && cargo build --release -p finstream \
 && strip target/release/finstream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home finstream
COPY --from=build /src/target/release/finstream /usr/local/bin/finstream
COPY data /app/data
WORKDIR /app
USER finstream
ENTRYPOINT ["finstream"]
CMD ["--help"]
