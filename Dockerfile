# The operator image for hosts with a Docker engine. `make image` builds the equivalent image
# without one (hack/image.py): the same binary, entrypoint, default argument, user and labels,
# on a root filesystem of the binary's libraries, the CA bundle and the nonroot user (65532).
FROM rust:1-bookworm AS build
ARG REVISION=unknown
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN GIT_REVISION=$REVISION cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
ARG REVISION=unknown
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/imageops/image-replication-operator
LABEL org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.licenses=NOASSERTION \
      org.opencontainers.image.title=image-replication-operator
COPY --from=build /src/target/release/image-replication-operator /usr/local/bin/image-replication-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/image-replication-operator"]
CMD ["run"]
