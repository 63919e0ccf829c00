# Trainer: PyTorch with CUDA; writes model versions into the shared registry volume.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    RECSTREAM_METRICS_PORT=9100 \
    RECSTREAM_MODEL_REGISTRY=/models
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
RUN pip install --no-cache-dir ".[model]"
EXPOSE 9100
ENTRYPOINT ["recstream"]
CMD ["trainer"]
