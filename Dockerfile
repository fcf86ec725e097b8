# Corebridge container image.
#
# Runs under Docker's default seccomp profile (the shards use epoll, not io_uring) and needs
# no locked memory; raise the file limit for many connections:
#   docker run --ulimit nofile=1048576 \
#     -p 4000:4000 -p 127.0.0.1:4010:4010 -e CB_API_BIND=0.0.0.0 corebridge
# (the internal API binds to loopback by default; inside a container publish it to the host's
# loopback only, as above).
# HTTPS: mount the certificate and key, set HTTPS_CERTFILE/HTTPS_KEYFILE and publish 4001
# (and 4011 for the internal API); `docker kill --signal HUP` reloads renewed files.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
COPY src src
COPY loadtest/src loadtest/src
COPY benches benches
RUN cargo build --release --locked -p corebridge

FROM debian:bookworm-slim
# librdkafka (bundled, built in the first stage) links libcurl (OAUTHBEARER) and OpenSSL at run
# time. Versions are the distribution's security-updated ones, not pinned.
# hadolint ignore=DL3008
RUN useradd --system --no-create-home --uid 10001 corebridge \
 && apt-get update && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/corebridge /usr/local/bin/corebridge
COPY tuning /etc/corebridge/tuning
USER 10001
EXPOSE 4000 4010 4001 4011
ENV CB_TUNING_FILE=/etc/corebridge/tuning/default.toml
ENTRYPOINT ["/usr/local/bin/corebridge"]
