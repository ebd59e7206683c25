# gridgov server image. Build: docker build -t gridgov .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends gdal-bin libpq5 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Pinned dependencies first, so this layer is cached across source changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY gis/ gis/
COPY layers/ layers/
COPY tiles/ tiles/
COPY api/ api/
COPY seed_data/ seed_data/
RUN pip install --no-cache-dir --no-deps .

COPY docker/entrypoint.sh /usr/local/bin/gridgov-entrypoint
RUN chmod 0755 /usr/local/bin/gridgov-entrypoint \
    && useradd --system --create-home --uid 10001 --user-group gridgov \
    && install -d -o gridgov -g gridgov /var/lib/gridgov

USER gridgov

# jobs of the OGC processes, the surface model: writable, and a volume in compose
# GRIDGOV_SECRET_KEY and the database URL come from the environment at run time (never
# baked in); production refuses to start with defaults. WORKERS: server processes.
ENV GRIDGOV_ENV=production HOST=0.0.0.0 PORT=8000 WORKERS=1 GRIDGOV_DATA_DIR=/var/lib/gridgov
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["/usr/local/bin/gridgov-entrypoint"]
CMD ["gridgov", "serve", "--host", "0.0.0.0", "--port", "8000"]
