# The Flowbill image: the API (`flowbill serve`, the default), ingest workers
# (`flowbill ingest`), the migration job (`flowbill migrate`) and every other subcommand.
# Runtime dependencies only (not the `dev` extra); runs as an unprivileged user.
# Needs BuildKit (the default builder since Docker 23) for `RUN --mount`.

# Stage 1: wheels of Flowbill and of its runtime dependencies.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# Stage 2: those wheels installed; no sources, build tools or wheel files left in the image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The migrations are SQL files beside the packages, not in the wheel: they go where
# flowbill.migrate looks for them (MIGRATIONS_DIR), unless the package already ships them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=migrations,target=/tmp/migrations \
    pip install --no-index --find-links /wheels flowbill \
 && dir=$(python -c 'from flowbill.migrate import MIGRATIONS_DIR; print(MIGRATIONS_DIR)') \
 && { [ -d "$dir" ] || cp -r /tmp/migrations "$dir"; } \
 && ls "$dir"/*.sql >/dev/null \
 && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin flowbill
USER flowbill
WORKDIR /home/flowbill
# 8000: the API; 9101: an ingest worker's /metrics, /healthz and /readyz.
EXPOSE 8000 9101
CMD ["flowbill", "serve"]
