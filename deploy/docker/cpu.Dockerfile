# spargo for CPUs on Debian 12: builds the `spargo` binary from this repository with scripts/setup.sh (Debian's
# packages, libtorch 1.13 CPU), then copies it into a Debian 12 image with only the runtime libraries, Python and
# g++ (the sandbox runs Python and C++ solutions for the code_tests reward). Build from the repository root:
#
#   docker build -f deploy/docker/cpu.Dockerfile -t spargo:cpu .
#   docker run --rm spargo:cpu --help
#   docker run --rm -p 50152:50152 -v "$PWD/secrets:/secrets:ro" spargo:cpu \
#     reward --listen 0.0.0.0:50152 --set services.token_file=/secrets/token
#
# The entry point is the binary: the container's arguments are a spargo command. It runs as the unprivileged user
# `spargo` (the sandbox then runs programs without its own uids: see README, Sandbox).

FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN SPARGO_BUILD_DIR=/src/build-docker SPARGO_BUILD_TARGETS=spargo bash scripts/setup.sh \
 && strip build-docker/cli/spargo

FROM debian:12
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libtorch1.13 libgloo0 libopenblas0-openmp libgrpc++1.51 libprotobuf32 libabsl20220623 libre2-9 libonig5 \
      libicu72 libcpp-httplib0.11 python3 g++ gnuplot-nox ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/spargo spargo
COPY --from=build /src/build-docker/cli/spargo /usr/local/bin/spargo
COPY configs /opt/spargo/configs
USER spargo
WORKDIR /home/spargo
ENTRYPOINT ["/usr/local/bin/spargo"]
CMD ["--help"]
