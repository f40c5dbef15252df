# The project image: the worker (default command), the HTTP API (`transfer api`) and the migrations
# (`transfer migrate`), as docker-compose.yml runs them.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; its home is the working directory of the service.
RUN useradd --create-home --home-dir /app --uid 10001 --user-group transfer

# The packages and modules pyproject.toml installs ([tool.setuptools] py-modules and
# packages.find include); tests/ and local state stay out (.dockerignore).
WORKDIR /src
COPY pyproject.toml ./
COPY domain/ domain/
COPY store/ store/
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
COPY worker.py settings.py logs.py ./
RUN pip install --no-cache-dir . \
    && cd / \
    && rm -rf /src

WORKDIR /app
USER transfer

# Exec form: SIGTERM reaches the Python process itself, so the worker drains its tasks and uvicorn
# shuts down cleanly.
CMD ["transfer-worker"]
