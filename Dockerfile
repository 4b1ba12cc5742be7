# The shiftload image: built in the Rust image, run from a distroless base
# (glibc and CA certificates, no shell, no package manager) as a non-root
# user.
#
#   docker build -t shiftload .
#   docker run --rm -e REDSHIFT_URL -e MONGODB_URI \
#     -v "$PWD/job.toml:/etc/shiftload/job.toml:ro" \
#     shiftload run /etc/shiftload/job.toml --quiet --summary-json /tmp/summary.json
#
# The job file names the secrets as ${REDSHIFT_URL} and ${MONGODB_URI};
# `-e NAME` without a value passes them from the calling shell, so they
# appear in neither the image, the command line nor the logs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests tests
# No debug info in the shipped binary (the release profile keeps line
# tables for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin shiftload

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/shiftload /usr/local/bin/shiftload
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/shiftload"]
CMD ["--help"]
