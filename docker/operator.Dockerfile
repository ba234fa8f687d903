# syntax=docker/dockerfile:1
# Meridian operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/meridian-dev/meridian-operator:0.1.0 .

# The bases are build arguments so a build without a registry can substitute local
# stand-ins (`cargo xtask images --dockerfile`); the defaults are the public images.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# The lock file pins every dependency; the cache mounts keep rebuilds incremental.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p meridian-operator --locked \
    && install -D -m 0755 target/release/meridian-operator /out/meridian-operator

# glibc + libgcc, no shell, no package manager; user 65532 ("nonroot").
FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/meridian-operator /usr/local/bin/meridian-operator
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/meridian-operator"]
