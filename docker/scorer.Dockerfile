# GPU scorer: NVIDIA's TensorRT image (TensorRT + CUDA + Python), plus torch and
# ONNX Runtime as fallbacks. Run with a GPU (`--gpus all` / compose device request).
FROM nvcr.io/nvidia/tensorrt:25.01-py3

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
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
CMD ["scorer"]
