# Container image of the operator. Not built in this repository's CI (no Docker engine there).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/image-replication-operator /usr/local/bin/image-replication-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/image-replication-operator"]
CMD ["run"]
