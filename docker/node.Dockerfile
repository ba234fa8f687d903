# syntax=docker/dockerfile:1
# Meridian cache node image. Build from the repository root:
#   docker build -f docker/node.Dockerfile -t ghcr.io/meridian-dev/meridian-node:0.1.0 .

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
    cargo build --profile node -p meridian-node --locked \
    && install -D -m 0755 target/node/meridian-node /out/meridian-node

# glibc + libgcc, no shell, no package manager; user 65532 ("nonroot").
FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/meridian-node /usr/local/bin/meridian-node
USER 65532:65532
# RESP clients, region links, HTTP API, metrics and health
EXPOSE 6379 16379 8080 9090
ENTRYPOINT ["/usr/local/bin/meridian-node"]
