#!/bin/bash
# One database and one login role per service and province (docker-entrypoint-initdb.d; runs once, on an empty
# data directory). LABORNET_DATABASES lists the names (labornet_<province>_<service>); each role owns only its
# own database and nobody else may connect to it, so no service can touch another service's data.
set -euo pipefail

: "${LABORNET_DATABASES:?}" "${LABORNET_DB_PASSWORD:?}"

for name in $LABORNET_DATABASES; do
  if [[ ! "$name" =~ ^labornet_[0-9]{6}_[a-z]+$ ]]; then
    echo "refusing database name $name" >&2
    exit 1
  fi
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
       -v name="$name" -v password="$LABORNET_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'name', :'name', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
  echo "database $name ready"
done
