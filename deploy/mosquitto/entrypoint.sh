#!/bin/sh
# Entrypoint of the `mosquitto` service (docker-compose.yml): writes the broker's password
# entries from the environment, then runs the broker, so no secret is kept in the repository.
#
#   flowbill                    FLOWBILL_MQTT_PASSWORD (required); set again at every start,
#                               so a rotated secret takes effect with a restart.
#   each ICCID listed in        FLOWBILL_DEVICE_MQTT_PASSWORD, one password shared by the
#   FLOWBILL_DEVICE_ICCIDS      listed SIMs (optional; ICCIDs separated by spaces or commas):
#                               for a pilot fleet or acceptance devices.
#
# Per-device passwords, the normal case, are provisioned into the same file, which lives on
# the data volume and keeps them across restarts:
#   docker compose exec -u mosquitto mosquitto \
#     mosquitto_passwd -b /mosquitto/data/passwords <ICCID> <password>
#   docker compose kill -s SIGHUP mosquitto        # reloads the password file and the ACL
# The file's path is the one `password_file` names in the configuration.
set -eu

conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
file=$(sed -n 's/^[[:space:]]*password_file[[:space:]]\{1,\}//p' "$conf" | tail -n 1)
[ -n "$file" ] || { echo "entrypoint: no password_file in $conf" >&2; exit 1; }
: "${FLOWBILL_MQTT_PASSWORD:?set FLOWBILL_MQTT_PASSWORD}"

umask 077
mkdir -p "$(dirname "$file")"
[ -f "$file" ] || : >"$file"
mosquitto_passwd -b "$file" flowbill "$FLOWBILL_MQTT_PASSWORD"

iccids=$(printf '%s' "${FLOWBILL_DEVICE_ICCIDS:-}" | tr ',' ' ')
if [ -n "$(printf '%s' "$iccids" | tr -d ' \t\n')" ]; then
  : "${FLOWBILL_DEVICE_MQTT_PASSWORD:?FLOWBILL_DEVICE_ICCIDS is set: set FLOWBILL_DEVICE_MQTT_PASSWORD}"
  for iccid in $iccids; do
    # A user name is an ACL pattern's %u: only ICCIDs (19 or 20 digits), never `flowbill`.
    if ! printf '%s' "$iccid" | grep -Eqx '[0-9]{19,20}'; then
      echo "entrypoint: FLOWBILL_DEVICE_ICCIDS: '$iccid' is not an ICCID" >&2
      exit 1
    fi
    mosquitto_passwd -b "$file" "$iccid" "$FLOWBILL_DEVICE_MQTT_PASSWORD"
  done
fi

# Started as root, mosquitto switches to the `mosquitto` user, which must read the password
# file (again on SIGHUP) and write the persistence store beside it.
if [ "$(id -u)" -eq 0 ]; then
  chown -R mosquitto:mosquitto "$(dirname "$file")"
fi
chmod 0600 "$file"
exec mosquitto -c "$conf"
