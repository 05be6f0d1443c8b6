# sam-droplet, CPU image: docker build -t sam-droplet:cpu .
# Run: docker run -p 9487:9487 -v "$PWD/model:/app/model:ro" sam-droplet:cpu   (weights: model/README.md)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLASK_HOST=0.0.0.0 \
    FLASK_PORT=9487 \
    SAM_DEVICE=cpu \
    SAM_MODEL_PATH=/app/model/mobile_sam.pt

# libmagic1: python-magic's content sniffing. Nothing else: OpenCV is the headless wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch's CPU build first (PyPI's default is the ~3 GB CUDA build), then the rest; cached apart from the code.
COPY requirements_server.txt ./
RUN pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu \
 && pip install -r requirements_server.txt

COPY pyproject.toml README.md app.py waitress_config.py gunicorn.conf.py uwsgi.ini ./
COPY sam_droplet ./sam_droplet
COPY model/README.md ./model/README.md
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sam \
 && mkdir -p /results && chown sam:sam /app/model /results

USER sam
VOLUME ["/app/model"]
EXPOSE 9487
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9487/health', timeout=4).status != 200)"]
# Gunicorn: the model loads in each worker after the fork; SIGTERM (docker stop) finishes requests first.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
