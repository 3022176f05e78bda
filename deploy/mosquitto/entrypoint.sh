#!/bin/sh
# Entrypoint of the `mosquitto` service (docker-compose.yml): prepares what the broker reads,
# then runs it, so that no secret is kept in the repository.
#
# - dynamic security (/mosquitto/data/dynamic-security.json): made once, on a new volume,
#   with the control account `flowbill-admin` (FLOWBILL_MQTT_CONTROL_PASSWORD). The device
#   reconciler then creates the services' account `flowbill` (FLOWBILL_MQTT_PASSWORD) through
#   the control API. To rotate either later:
#     docker compose exec mosquitto mosquitto_ctrl -u flowbill-admin -P <password> \
#       dynsec setClientPassword <user> <new password>
# - the device files (/mosquitto/devices/passwords and crl.pem) are written by
#   `flowbill devices reconcile` (the `devices` service) from the database; the broker waits
#   for them, and re-reads them when the reconciler signals it (SIGHUP).
set -eu

conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
setting() { sed -n "s/^[[:space:]]*$1[[:space:]]\{1,\}//p" "$conf" | tail -n 1; }
dynsec=$(setting plugin_opt_config_file)
passwords=$(setting password_file)
crl=$(setting crlfile)
: "${FLOWBILL_MQTT_CONTROL_PASSWORD:?set FLOWBILL_MQTT_CONTROL_PASSWORD}"

umask 077
if [ ! -f "$dynsec" ]; then
  mkdir -p "$(dirname "$dynsec")"
  mosquitto_ctrl dynsec init "$dynsec" flowbill-admin "$FLOWBILL_MQTT_CONTROL_PASSWORD" >/dev/null
fi
waited=0
until [ -f "$passwords" ] && [ -f "$crl" ]; do
  if [ "$waited" -ge 120 ]; then
    echo "entrypoint: no $passwords and $crl after 120 s: is the devices service running?" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

# Started as root, mosquitto switches to the `mosquitto` user, which must write the
# persistence store and dynamic security's file, and read the device files (again on SIGHUP).
if [ "$(id -u)" -eq 0 ]; then
  chown -R mosquitto:mosquitto "$(dirname "$dynsec")"
fi
exec mosquitto -c "$conf"
