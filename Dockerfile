# syntax=docker/dockerfile:1
# A static musl build of the operator on a distroless base: no shell, no libc, non-root.
#   docker build -t sforg-operator .
# scripts/build-static.sh builds and checks the same binary without Docker.

FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin sforg-operator \
 && cp target/x86_64-unknown-linux-musl/release/sforg-operator /sforg-operator

FROM gcr.io/distroless/static:nonroot
COPY --from=build /sforg-operator /sforg-operator
# 65532 is distroless' nonroot user; the chart runs it with a read-only root filesystem.
USER 65532:65532
# The re-auth callback and metrics/health.
EXPOSE 8080 9090
ENTRYPOINT ["/sforg-operator"]
CMD ["run"]
