# One image for every role: migrations, the API server and workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RESOLUTE_LOG_FORMAT=json
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY orchestrator ./orchestrator
COPY providers ./providers
COPY migrations ./migrations
COPY examples ./examples
RUN pip install --no-cache-dir . && useradd --system --home /app resolute
USER resolute

# The embedded database is for laptops; a container always talks to RESOLUTE_DATABASE_URL.
CMD ["resolute", "--help"]
