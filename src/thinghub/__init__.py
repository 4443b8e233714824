"""thinghub: a self-hosted IoT device cloud."""

__version__ = "0.1.0"
