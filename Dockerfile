# syntax=docker/dockerfile:1
# awning in a container: a build stage with the Rust toolchain, a slim runtime
# with the binary, its config under /etc/awning and an unprivileged user.
#   docker build -t awning .
#   docker run -p 8080:8080 -p 9091:9091 -v $PWD/my-config:/etc/awning:ro awning

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from the manifests alone: this layer (Pingora and the
# rest, most of the build time) is reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in route_match cache_policy limits; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin awning \
    && rm -rf src benches target/release/.fingerprint/awning-* target/release/deps/awning-* target/release/deps/libawning-*
# Then awning itself, with the same command as the README's.
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin awning

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin awning
COPY --from=build /src/target/release/awning /usr/local/bin/awning
COPY proxy.yaml /etc/awning/proxy.yaml
COPY rules /etc/awning/rules
# Inside a container the proxy and metrics listeners face the container
# network; the admin API stays on loopback (the health check runs inside).
# The upgrade socket lives in the writable /tmp.
RUN sed -i -e 's/"127.0.0.1:8080"/"0.0.0.0:8080"/' -e 's/"127.0.0.1:9091"/"0.0.0.0:9091"/' /etc/awning/proxy.yaml \
    && /usr/local/bin/awning check -c /etc/awning/proxy.yaml
USER awning
# 8080 HTTP, 9091 Prometheus metrics; 9090 the admin API (loopback unless your config opens it).
EXPOSE 8080 9090 9091
# No shell or curl needed: the binary asks its own admin API.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/awning", "health", "--admin", "127.0.0.1:9090"]
# SIGTERM drains in-flight requests (shutdown_grace); SIGHUP reloads the config
# (`docker kill -s HUP`); a mounted /etc/awning is watched and reloaded on change.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/awning", "--log-format", "json"]
CMD ["run", "-c", "/etc/awning/proxy.yaml"]
