# Stream worker: Faust + RocksDB, no torch (keeps the image small and the worker lean).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    RECSTREAM_STATE_DIR=/var/lib/recstream/state \
    RECSTREAM_METRICS_PORT=9100
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream ./stream
COPY inference ./inference
COPY trainer ./trainer
COPY recstream ./recstream
COPY bench ./bench
# Installs this repository itself, not a floating PyPI name:
# hadolint ignore=DL3013
RUN pip install --no-cache-dir . && \
    useradd --system --create-home recstream && \
    mkdir -p /var/lib/recstream/state && chown -R recstream /var/lib/recstream
USER recstream
VOLUME ["/var/lib/recstream/state"]
EXPOSE 9100
ENTRYPOINT ["recstream"]
CMD ["worker"]
