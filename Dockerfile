# llmtap container image: a release build in a Rust image, run from a slim
# Debian image as a non-root user.
#
#   docker build -t llmtap .
#   docker run -p 4000:4000 -p 4001:4001 -v llmtap-data:/app/data \
#     -e LLMTAP_ADMIN_TOKEN="$(openssl rand -hex 16)" llmtap
#
# The admin listener (UI, /api, /metrics, /healthz, /readyz) binds 0.0.0.0
# in the image, so a token is required: start-up refuses without one.

# ---- build ---------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit caches keep the registry and the target dir between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin llmtap \
 && cp target/release/llmtap /usr/local/bin/llmtap

# ---- run -----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin llmtap \
 && mkdir -p /app/data \
 && chown llmtap:llmtap /app/data
COPY --from=build /usr/local/bin/llmtap /usr/local/bin/llmtap
COPY config/ /app/config/
WORKDIR /app
USER llmtap
ENV LLMTAP_LISTEN=0.0.0.0:4000 \
    LLMTAP_ADMIN_LISTEN=0.0.0.0:4001
EXPOSE 4000 4001
# SQLite store (config/llmtap.toml: sqlite://data/llmtap.db). Set
# LLMTAP_DATABASE_URL=postgres://… to share one store between replicas.
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["llmtap", "--healthcheck"]
ENTRYPOINT ["llmtap"]
