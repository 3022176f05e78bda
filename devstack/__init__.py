"""The dev-only floor: the local database and broker, and the demos. Production never imports it."""
