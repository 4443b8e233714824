"""Literal request bodies from the iTwin seed, shared by the tests that read them."""

from __future__ import annotations

# The seed's /data/upload curl body, exactly as printed (its array ends with `},`).
SEED_UPLOAD_CURL = b"""{
    "observations": [
        {
            "sensorId": "/api/B08851/node/dynamic/AB10E2/device/D76619/sensor",
            "timestamp": "2024-02-20T04:35:23.653Z",
            "values": {
                "Alignment_Left_SD": 0.23,
                "Alignment_Right_SD": 0.84
            }
        },
    ]
}"""
# The same body in the seed's fetch and requests samples.
SEED_UPLOAD_ONE_LINE = (
    b'{"observations":[{"sensorId":"/api/B08851/node/dynamic/AB10E2/device/D76619/sensor",'
    b'"timestamp":"2024-02-20T04:35:23.653Z","values":{"Alignment_Left_SD":0.23,'
    b'"Alignment_Right_SD":0.84}},]}'
)
