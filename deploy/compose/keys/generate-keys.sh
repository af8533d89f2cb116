#!/bin/sh
# Node keys and the federation trust list (the `keys` one-shot service of docker-compose.yml).
#
# For every province in LABORNET_KEY_PROVINCES: `labornet keys generate` creates (once) its Ed25519 signing key and
# dev token issuer key under /federation/keys/<province>/ (a volume of that province alone) and lists the signing
# key in /federation/trust-list.json (the shared `trust` volume, read by every node). Existing keys are kept, so
# running it again changes nothing. Runs as root only to hand the files to the services' user (uid 10001).
set -eu

: "${LABORNET_KEY_PROVINCES:?}"
for province in $LABORNET_KEY_PROVINCES; do
  labornet keys generate --province "$province" --data-dir /federation
done
chown -R 10001:10001 /federation
chmod 0755 /federation
chmod 0644 /federation/trust-list.json
