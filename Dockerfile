# syntax=docker/dockerfile:1
#
# droid2api container image (README: Docker).
#
#   docker build -t droid2api .
#   docker run -d -p 3000:3000 -v "$PWD/data:/app/data" --env-file .env droid2api
#
# Two stages: a release build on the official Rust image, then the binary alone on Debian slim
# (same Debian release, so the same glibc). SQLite is compiled into the binary (rusqlite
# `bundled`) and so is the time-zone database (jiff), so the runtime needs only CA certificates.

# ---- build -------------------------------------------------------------------------------------
# At least Cargo.toml's rust-version.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# Only what the build reads: the workspace manifest and lock file, the build script, the sources,
# the admin console (embedded by build.rs), the declared benches and the other workspace members
# (Cargo loads every member's manifest). .dockerignore keeps data and secrets out of the context.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY ui ./ui
COPY benches ./benches
COPY mock ./mock
COPY bench ./bench

RUN cargo build --release --locked --bin droid2api \
 && cp target/release/droid2api /droid2api

# ---- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# CA certificates: upstream calls verify TLS against the system store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root user (uid/gid 10001) owning the data and log folders. A bind-mounted data
# folder must be writable by it: `sudo chown 10001:10001 data` on the host.
RUN groupadd --system --gid 10001 droid2api \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin droid2api \
 && mkdir -p /app/data /app/logs \
 && chown -R 10001:10001 /app

COPY --from=build /droid2api /usr/local/bin/droid2api

WORKDIR /app
# HOST needs no setting: the gateway listens on 0.0.0.0 by default. The folders are the binary's
# defaults (./data, ./logs) seen from /app, made absolute so that no working directory moves them.
ENV DATA_DIR=/app/data \
    LOG_DIR=/app/logs
USER 10001:10001
VOLUME /app/data
EXPOSE 3000

# `droid2api health` asks GET /health on the address the gateway's own settings give (PORT,
# HOST, .env, config.json): exit 0 healthy, 1 not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["droid2api", "health"]

# SIGTERM (docker stop) lets in-flight streams finish within timing.shutdown_grace_s (30 s by
# default): give `docker stop` a longer timeout (`-t 40`; compose sets stop_grace_period).
ENTRYPOINT ["droid2api"]
CMD ["serve"]
