FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY models ./models
RUN pip install --no-cache-dir . && useradd --create-home modelhub
USER modelhub
ENV MODELHUB_CATALOG_DIR=/app/models MODELHUB_DATA_DIR=/home/modelhub/data
EXPOSE 8000
CMD ["modelhub", "serve", "--host", "0.0.0.0"]
