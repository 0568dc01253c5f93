# syntax=docker/dockerfile:1
# A static musl build of the operator on a distroless base: no shell, no libc, non-root.
#   docker build -t sforg-operator .
#   docker build --target backup-job -t sforg-backup-job .   (the example backup job)
# The build stage runs scripts/build-static.sh, which scripts/build-images.sh also runs to
# make the same images without Docker (for the test node).

FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools file \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin=$(scripts/build-static.sh) \
 && test -n "$bin" \
 && cp "$bin" "$(dirname "$bin")/sforg-backup-job" /

FROM gcr.io/distroless/static:nonroot AS backup-job
COPY --from=build /sforg-backup-job /sforg-backup-job
USER 65532:65532
ENTRYPOINT ["/sforg-backup-job"]

FROM gcr.io/distroless/static:nonroot
COPY --from=build /sforg-operator /sforg-operator
# 65532 is distroless' nonroot user; the chart runs it with a read-only root filesystem.
USER 65532:65532
# The re-auth callback and metrics/health.
EXPOSE 8080 9090
ENTRYPOINT ["/sforg-operator"]
CMD ["run"]
