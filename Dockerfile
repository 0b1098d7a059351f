# Streaming runtime image (no torch): the detect flow and the simulator's producer.
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY novacron_ml ./novacron_ml
COPY operators ./operators
COPY dataflows ./dataflows
COPY training ./training
COPY models ./models
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["novacron-ml", "run"]
