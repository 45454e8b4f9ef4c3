# Multi-stage: the build stage generates the protobuf package from protos/ and builds the
# project's wheel; the runtime image installs the locked packages and that wheel, and runs as a
# non-root user. Every package comes from requirements.lock, each file checked against its
# hashes (`make lock` writes it; `make sbom` installs the same way and describes the result).
# The base image is an argument: `make test-containers` passes a local one built from Debian's
# packages where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml ./
COPY protos protos
RUN python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
        $(find protos -name '*.proto') \
    && find exchange -type d -exec touch {}/__init__.py \;
COPY shared shared
COPY order_service order_service
COPY wallet_pool_service wallet_pool_service
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home app
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps /wheels/*.whl \
    && rm -rf /wheels /tmp/requirements.lock
USER app
ENV APP_ENV=production PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The service's own gRPC health check (no grpcurl in the image), on the port of whichever
# service the container runs; compose and Kubernetes set their own.
HEALTHCHECK --interval=5s --timeout=5s --retries=10 \
    CMD ["python", "-m", "shared.healthcheck"]
# Each container runs one service: `python -m order_service` or `python -m wallet_pool_service`.
CMD ["python", "-m", "order_service"]
