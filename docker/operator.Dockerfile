# syntax=docker/dockerfile:1
# Meridian operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/meridian-dev/meridian-operator:0.1.0 .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The lock file pins every dependency; the cache mounts keep rebuilds incremental.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p meridian-operator --locked \
    && install -D -m 0755 target/release/meridian-operator /out/meridian-operator

# glibc + libgcc, no shell, no package manager; user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/meridian-operator /usr/local/bin/meridian-operator
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/meridian-operator"]
