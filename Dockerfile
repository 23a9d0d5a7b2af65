# Self-hosting CNN Visualization Studio on a CPU server (a share link).
#   docker build -t cnn-viz-studio .
#   docker run --rm -p 8501:8501 cnn-viz-studio        # then open http://localhost:8501
# CPU wheels only (requirements-cpu.txt), the public Streamlit config (deploy/streamlit-public.toml),
# a non-root user. tests/test_deploy.py checks that the files copied here exist.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 app
WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements-cpu.txt changes.
COPY requirements-cpu.txt ./
RUN pip install -r requirements-cpu.txt

COPY LICENSE app.py ./
COPY pages/ pages/
COPY vizui/ vizui/
COPY vizcore/ vizcore/
COPY deploy/streamlit-public.toml .streamlit/config.toml

# A public share link: no downloads at run time (weights, galleries) and no model uploads.
# Public mode: no model uploads or dataset downloads, small image uploads, capped steps
# (vizui/public.py). For a private server, pass -e VIZCORE_PUBLIC=0 to docker run.
ENV VIZCORE_OFFLINE=1 \
    VIZCORE_PUBLIC=1

USER app
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0"]
