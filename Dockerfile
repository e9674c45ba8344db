# One image for every service of docker-compose.yml; the command picks the process.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV CHATTERBOX_DATA_DIR=/data
VOLUME /data
CMD ["chatterbox", "web", "--host", "0.0.0.0"]
