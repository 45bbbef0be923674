# Multi-stage build: compile with the Rust toolchain, run as an unprivileged user
# on a slim Debian with only the binary and its config.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
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
# Inside a container the listeners must face the container network.
RUN sed -i -e 's/"127.0.0.1:8080"/"0.0.0.0:8080"/' -e 's/"127.0.0.1:9090"/"0.0.0.0:9090"/' \
           -e 's/"127.0.0.1:9091"/"0.0.0.0:9091"/' /etc/awning/proxy.yaml \
    && /usr/local/bin/awning check -c /etc/awning/proxy.yaml
USER awning
EXPOSE 8080 9090 9091
# Mount your own /etc/awning to replace the shipped configuration.
ENTRYPOINT ["/usr/local/bin/awning"]
CMD ["run", "-c", "/etc/awning/proxy.yaml"]
