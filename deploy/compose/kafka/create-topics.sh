#!/bin/sh
# Create the federation's topics with kafka-topics.sh (the `kafka-topics` one-shot service of docker-compose.yml).
#
# TOPIC_LIST: a file of "<topic> <retention.ms>" lines (the `kafka-topics` config, generated from the registry).
# Only missing topics are created, PARALLEL at a time (each kafka-topics.sh call starts a JVM); then the topic
# list is read back and the script fails unless every topic exists, so a restart simply completes the set.
set -eu

: "${BOOTSTRAP_SERVERS:?}" "${TOPIC_LIST:?}"
PARTITIONS="${TOPIC_PARTITIONS:-3}"
REPLICATION="${TOPIC_REPLICATION:-1}"
PARALLEL="${PARALLEL:-4}"
KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh
work=$(mktemp -d)

"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --list > "$work/existing"

create() {
  if ! "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists --topic "$1" \
      --partitions "$PARTITIONS" --replication-factor "$REPLICATION" \
      --config "retention.ms=$2" --config cleanup.policy=delete > /dev/null 2> "$work/$1.err"; then
    echo "failed to create $1: $(cat "$work/$1.err")" >&2
  fi
}

wanted=0
created=0
running=0
while read -r topic retention; do
  [ -n "$topic" ] || continue
  wanted=$((wanted + 1))
  if grep -qxF "$topic" "$work/existing"; then
    continue
  fi
  create "$topic" "$retention" &
  created=$((created + 1))
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then
    wait
    running=0
  fi
done < "$TOPIC_LIST"
wait

"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --list > "$work/existing"
missing=0
while read -r topic _; do
  [ -n "$topic" ] || continue
  if ! grep -qxF "$topic" "$work/existing"; then
    echo "missing topic: $topic" >&2
    missing=$((missing + 1))
  fi
done < "$TOPIC_LIST"
rm -rf "$work"

if [ "$missing" -gt 0 ]; then
  echo "$missing of $wanted topics are missing" >&2
  exit 1
fi
echo "topics: $wanted present ($created created now)"
