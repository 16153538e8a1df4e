# spargo for NVIDIA GPUs: builds the `spargo` binary against CUDA libtorch on an NVIDIA CUDA base image (Ubuntu 24.04,
# whose gRPC, protobuf and abseil packages are the versions spargo builds with on Debian 12).
#
# Where libtorch comes from: the PyTorch wheel. `pip install torch` (2.11.0 for CUDA 13.0 by default, the build spargo
# is developed against on H200s; TORCH_INDEX_URL and the base images pick another CUDA) installs libtorch with its
# CMake config in the wheel's folder (`python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'`); CMake finds
# it through CMAKE_PREFIX_PATH, and the binary loads libtorch_cuda.so, libc10_cuda.so and NCCL (the nvidia-* wheels)
# from the same venv at run time, so the venv is copied into the runtime image. The wheel ships its own
# google/protobuf headers: the build puts Debian's/Ubuntu's protobuf headers first (docs/style.md).
# Build from the repository root (needs network access for apt and pip):
#
#   docker build -f deploy/docker/cuda.Dockerfile -t spargo:cuda .
#   docker run --rm --gpus all spargo:cuda rollout --device cuda --listen 0.0.0.0:50151 \
#     --set services.token_file=/secrets/token          # with the token file mounted at /secrets
#
# The host needs the NVIDIA driver and the NVIDIA Container Toolkit (`--gpus`); on Kubernetes, the NVIDIA device
# plugin (nvidia.com/gpu resources, deploy/k8s).

# The toolkit of the build image should match the wheel's CUDA (cu130: CUDA 13.0): Torch's CMake config looks for it.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config python3 python3-venv \
      libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc libabsl-dev libre2-dev libonig-dev \
      libicu-dev nlohmann-json3-dev libcpp-httplib-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY . .
RUN cmake -S . -B build-docker -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARGO_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/torch/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
 && cmake --build build-docker --target spargo \
 && strip build-docker/cli/spargo

FROM ${CUDA_RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51t64 libprotobuf32t64 libabsl20220623t64 libre2-10 libonig5 libicu74 libcpp-httplib0.14 \
      python3 g++ gnuplot-nox ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/spargo spargo
COPY --from=build /opt/torch /opt/torch
COPY --from=build /src/build-docker/cli/spargo /usr/local/bin/spargo
COPY configs /opt/spargo/configs
# libtorch, c10 and the CUDA libraries of the wheel (torch/lib, nvidia/*/lib).
RUN find /opt/torch/lib/python3*/site-packages/torch/lib /opt/torch/lib/python3*/site-packages/nvidia \
      -name '*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/torch.conf \
 && ldconfig \
 && /usr/local/bin/spargo --help > /dev/null
USER spargo
WORKDIR /home/spargo
ENTRYPOINT ["/usr/local/bin/spargo"]
CMD ["--help"]
