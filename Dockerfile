# dqmon container image: a Rust builder, then a slim runtime that runs as a
# non-root user. Build:  docker build -t dqmon:0.1.0 .
# Run:   docker run --rm -p 9464:9464 -v $PWD/rules:/etc/dqmon:ro \
#          -v dqmon-state:/var/lib/dqmon -v /data/drop:/data/drop \
#          dqmon:0.1.0 run --config /etc/dqmon/payments.yaml

# --- builder: compile the release binary from the locked dependency set
FROM rust:1.88-slim-bookworm AS builder
# gcc, make and perl are enough for every crate of the lock file (no system TLS).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dqmon \
 && cp target/release/dqmon /usr/local/bin/dqmon \
 && strip /usr/local/bin/dqmon

# --- runtime: the binary, CA certificates (for SMTP/webhook TLS), a non-root user
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dqmon \
 && useradd --system --uid 10001 --gid dqmon --home-dir /var/lib/dqmon --shell /usr/sbin/nologin dqmon \
 && mkdir -p /var/lib/dqmon /etc/dqmon \
 && chown dqmon:dqmon /var/lib/dqmon
COPY --from=builder /usr/local/bin/dqmon /usr/local/bin/dqmon
USER 10001:10001
WORKDIR /var/lib/dqmon
VOLUME ["/var/lib/dqmon"]
# JSON log lines on stderr; the listener on every interface of the container.
ENV DQMON_LOG_FORMAT=json \
    DQMON_LISTEN=0.0.0.0:9464 \
    RUST_LOG=info
EXPOSE 9464
# tini forwards SIGTERM/SIGHUP to dqmon and reaps zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/dqmon"]
CMD ["run", "--config", "/etc/dqmon/dqmon.yaml"]
