# chronoq: one image for every role (migrate, timer, worker, enqueue, status, demo).
#   docker build -t chronoq .
#   docker run --rm -e CHRONOQ_DATABASE_URL=... -e CHRONOQ_AMQP_URL=... chronoq timer
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user with a fixed uid, so that runAsNonRoot-style checks can verify it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin chronoq

# Install from the project's own files only (pyproject.toml names README.md as the readme).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && rm -rf /build

WORKDIR /home/chronoq
USER 10001:10001

ENTRYPOINT ["chronoq"]
CMD ["--help"]
