#!/usr/bin/env bash
# MQTT on the machine's other brokers, for the broker-portability tests (tests/conftest.py, fixture mqtt_url):
#   RabbitMQ 3.x  rabbitmq_mqtt plugin on 127.0.0.1:1885 (1883 is Mosquitto's), guest from loopback
#   NATS 2.9+     a separate nats-server for the tests: client 127.0.0.1:4223, MQTT 127.0.0.1:1886,
#                 JetStream in /var/lib/radio-nats-mqtt (the machine's own nats-server on 4222 is left alone)
# Idempotent: a broker already listening on its MQTT port is left as it is. Called by .ci/run before pytest.
set -euo pipefail

RABBIT_MQTT_PORT=${RADIO_RABBITMQ_MQTT_PORT:-1885}
NATS_MQTT_PORT=${RADIO_NATS_MQTT_PORT:-1886}
NATS_CLIENT_PORT=${RADIO_NATS_CLIENT_PORT:-4223}
NATS_DIR=${RADIO_NATS_DIR:-/var/lib/radio-nats-mqtt}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port, what, seconds
  for _ in $(seq 1 "$3"); do listening "$1" && return 0; sleep 1; done
  echo "brokers: $2 is not listening on 127.0.0.1:$1" >&2
  return 1
}

need_apt=()
command -v rabbitmq-server >/dev/null || need_apt+=(rabbitmq-server)
command -v nats-server >/dev/null || need_apt+=(nats-server)
if ((${#need_apt[@]})); then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; fi

# RabbitMQ ---------------------------------------------------------------------------------------------------
if listening "$RABBIT_MQTT_PORT"; then
  echo "brokers: RabbitMQ MQTT already on 127.0.0.1:$RABBIT_MQTT_PORT"
else
  echo "brokers: enabling rabbitmq_mqtt on 127.0.0.1:$RABBIT_MQTT_PORT"
  # Plugin first: rabbitmq.conf may only name mqtt.* keys once the plugin is enabled (unknown keys stop the boot).
  rabbitmq-plugins enable --offline rabbitmq_mqtt >/dev/null
  conf=/etc/rabbitmq/rabbitmq.conf
  touch "$conf"
  grep -q '^listeners.tcp' "$conf" || echo "listeners.tcp.local = 127.0.0.1:5672" >>"$conf"
  sed -i '/^mqtt\./d' "$conf"
  cat >>"$conf" <<EOF
mqtt.listeners.tcp.local = 127.0.0.1:$RABBIT_MQTT_PORT
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
mqtt.exchange = amq.topic
EOF
  # The listener is read at boot: restart the node (guest may connect from loopback only, which is all we use).
  rabbitmqctl -q stop >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do rabbitmqctl -q status >/dev/null 2>&1 || break; sleep 1; done
  /etc/init.d/rabbitmq-server start >/dev/null || true
  wait_port "$RABBIT_MQTT_PORT" "RabbitMQ MQTT" 90
fi
listening 5672 || echo "brokers: warning: RabbitMQ AMQP is not on 5672" >&2

# NATS -------------------------------------------------------------------------------------------------------
if listening "$NATS_MQTT_PORT"; then
  echo "brokers: NATS MQTT already on 127.0.0.1:$NATS_MQTT_PORT"
else
  echo "brokers: starting nats-server with MQTT on 127.0.0.1:$NATS_MQTT_PORT"
  mkdir -p "$NATS_DIR"
  cat >"$NATS_DIR/nats.conf" <<EOF
# Written by .ci/brokers.sh: a NATS server for radio's broker-portability tests.
server_name: radio-nats-mqtt
listen: 127.0.0.1:$NATS_CLIENT_PORT
jetstream {
  store_dir: "$NATS_DIR"  # NATS adds jetstream/ itself
  max_memory_store: 256MB
  max_file_store: 2GB
}
mqtt {
  listen: 127.0.0.1:$NATS_MQTT_PORT
  # QoS 1 messages a subscription may have unacknowledged before NATS waits (flow control, never drops).
  # NATS caps the SUM over a session's subscriptions at 65535 (16-bit packet ids): 65535 here makes every
  # SUBSCRIBE after a session's first fail (SUBACK 0x80). The service and each node hold 4 subscriptions.
  max_ack_pending: 10000
  ack_wait: "30s"
}
EOF
  setsid nohup nats-server -c "$NATS_DIR/nats.conf" -l "$NATS_DIR/nats.log" -P "$NATS_DIR/nats.pid" \
    >/dev/null 2>&1 </dev/null &
  wait_port "$NATS_MQTT_PORT" "NATS MQTT" 30
fi
echo "brokers: ok (rabbitmq mqtt://127.0.0.1:$RABBIT_MQTT_PORT, nats mqtt://127.0.0.1:$NATS_MQTT_PORT)"
