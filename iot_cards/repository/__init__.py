"""SQL of the IoT card domain (migrations/0011.iot_cards.sql), one module per service module.
Typed rows, no commits."""
