"""`flowbill simulate`: a fleet of vehicles and IoT SIMs reporting per-app usage over MQTT.

`options` says what to simulate; `traffic` is the devices and what they use minute by minute;
`malformed` the broken messages a faulty device sends; `plan` puts every message in publishing
order, pure and seeded; `summary` counts what a plan sends; `publish` sends it over MQTT; and
`arguments` is the command line's side.
"""
