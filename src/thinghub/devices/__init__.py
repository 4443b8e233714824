"""Device-side adapters: the MQTT hub and DPS, and the HTTPS device ingest."""
