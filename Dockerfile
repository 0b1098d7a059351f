# Streaming runtime image (no torch): the detect flow and the simulator's producer.
# The retraining image (deploy/k8s/retrain.yaml, compose's `retrain`) is the same with the
# train extra:  docker build --build-arg EXTRAS="[train]" -t novacron-ml-train .
FROM python:3.12-slim
ARG EXTRAS=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY novacron_ml ./novacron_ml
COPY operators ./operators
COPY dataflows ./dataflows
COPY training ./training
COPY models ./models
RUN pip install --no-cache-dir ".${EXTRAS}" \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin novacron
# Not root: the flow needs no privilege (deploy/k8s runs it as this uid too).
USER 10001
ENTRYPOINT []
CMD ["novacron-ml", "run"]
