# Portico in a container: `docker build -t portico .`, then
#   docker run --rm -p 8080:8080 portico
# and mount your own config over /etc/portico/portico.yaml.

# Build stage: the release binary, with the lockfile's exact dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin portico

# Runtime stage: Debian slim with the CA roots (for HTTPS upstreams, JWKS,
# introspection) and nothing else; no shell tools are needed to serve.
FROM debian:bookworm-slim
# Not pinned: the CA roots should be the newest the release has (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent portico
COPY --from=build /src/target/release/portico /usr/bin/portico
COPY --chown=root:portico --chmod=0640 packaging/container.yaml /etc/portico/portico.yaml
USER 10001:10001
EXPOSE 8080
# SIGTERM drains (in-flight requests finish), which is what `docker stop` sends.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/portico"]
CMD ["run", "--config", "/etc/portico/portico.yaml", "--no-watch"]
