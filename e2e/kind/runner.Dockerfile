# Toolbox the e2e suite runs in on kind (see run.sh): the Rust toolchain plus redis-cli,
# which two_regions.rs uses for `redis-cli --cluster check`. kubectl and helm are mounted
# from the host by run.sh so they match what installed the chart.
FROM rust:1.95-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-tools \
    && rm -rf /var/lib/apt/lists/*
