# roomcast: multi-stage build. The dependency layer is cached apart from the source, so a code
# change rebuilds only roomcast itself. The build step is the native release build the tests
# and benchmarks use: `cargo build --release --locked -p roomcast`.

FROM rust:1.95-slim-bookworm AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
# Stub targets, so this layer compiles only the dependencies.
RUN mkdir -p src loadtest/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs && touch loadtest/src/lib.rs \
    && cargo build --release --locked -p roomcast \
    && rm -rf src

FROM deps AS build
COPY src src
# New mtimes so cargo rebuilds roomcast over the stub, not the cached dependencies.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p roomcast

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 roomcast \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin roomcast
COPY --from=build /src/target/release/roomcast /usr/local/bin/roomcast
COPY config/default.toml /etc/roomcast/default.toml
USER 10001:10001
# Configuration comes from the environment (ROOMCAST_*, nested keys joined by "__"), over the
# documented defaults in /etc/roomcast/default.toml. Inside a container listen on all
# interfaces; the orchestrator decides what is exposed.
ENV ROOMCAST_LISTEN=0.0.0.0:8080 \
    ROOMCAST_LOG_FORMAT=json
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp speaks enough HTTP for a liveness probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/roomcast", "--config", "/etc/roomcast/default.toml"]
