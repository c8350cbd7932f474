# Debian's mosquitto, laid out like the eclipse-mosquitto image that deploy/monitor/compose.yaml
# names (config in /mosquitto/config, data in /mosquitto/data), for machines that build their images
# from a local Debian base instead of pulling:
#   docker build --network host --build-arg BASE=local/debian:bookworm-slim \
#     -f deploy/monitor/mosquitto.Dockerfile -t soundsift-mosquitto deploy/monitor
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /mosquitto/config /mosquitto/data \
 && chown -R mosquitto:mosquitto /mosquitto
COPY mosquitto.conf /mosquitto/config/mosquitto.conf
USER mosquitto
EXPOSE 1883
CMD ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
