# Multi-stage: the build stage generates the protobuf package from protos/ and builds the
# project's wheel; the runtime image installs the locked packages and that wheel, and runs as a
# non-root user. Every package comes from requirements.lock, each file checked against its
# hashes (`make lock` writes it; `make sbom` installs the same way and describes the result).
FROM python:3.11-slim AS build
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

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home app
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps /wheels/*.whl \
    && rm -rf /wheels /tmp/requirements.lock
USER app
ENV APP_ENV=production PYTHONUNBUFFERED=1
# Each container runs one service: `python -m order_service` or `python -m wallet_pool_service`.
CMD ["python", "-m", "order_service"]
