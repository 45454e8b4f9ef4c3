# Multi-stage: the build stage generates the protobuf package from protos/ and builds wheels;
# the runtime image holds only the installed wheels and runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir grpcio-tools==1.85.1
COPY pyproject.toml ./
COPY protos protos
RUN python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
        $(find protos -name '*.proto') \
    && find exchange -type d -exec touch {}/__init__.py \;
COPY shared shared
COPY order_service order_service
COPY wallet_pool_service wallet_pool_service
# The otel extra: tracing can be turned on by OTEL_* variables alone (README).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER app
ENV APP_ENV=production PYTHONUNBUFFERED=1
# Each container runs one service: `python -m order_service` or `python -m wallet_pool_service`.
CMD ["python", "-m", "order_service"]
