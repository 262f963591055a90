# The worker image: serving dependencies only (no torch). Build: docker build -t recstream .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# libgomp1: OpenMP for LightGBM (the learned ranker)
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md constraints.txt ./
COPY stream ./stream
COPY models ./models
COPY exporters ./exporters
COPY schemas ./schemas
# constraints.txt: llvmlite<0.44, which lleaves (the ranker's compiled trees) needs
RUN pip install -c constraints.txt . && useradd --create-home recstream
USER recstream
EXPOSE 9108
CMD ["recstream", "worker"]
