# gscore API and worker image. CPU by default; for GPU workers build with the CUDA wheels:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 -t gscore .
# The cu130 wheels bundle CUDA 13.0: the host needs an NVIDIA driver >= 580 (nvidia-smi shows it) and the
# NVIDIA Container Toolkit. The health check below is the API's; the worker service sets its own
# (`gscore worker --check`, see docker-compose.yml).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GSCORE_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gscore ./gscore
RUN pip install --index-url "$TORCH_INDEX" "torch==2.14.1" "torchvision==0.29.1" \
 && pip install ".[postgres]"

RUN useradd --create-home --uid 1000 gscore && mkdir -p /data && chown gscore /data
USER gscore
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
# the API binds 0.0.0.0 and so starts only once an API key exists (gscore keys create --name ops --admin)
CMD ["gscore", "serve", "--host", "0.0.0.0", "--port", "8000"]
