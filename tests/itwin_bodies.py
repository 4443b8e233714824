"""Request bodies of the iTwin Sensor Data Service, exactly as its documentation prints them,
shared by the unit tests of the schemas and the e2e tests of the REST face."""

from __future__ import annotations

__all__ = ["ADVANCED_INTEGRATION", "SIMPLE_INTEGRATION"]

# "Advanced Device(s), and Sensor(s) Creation": the curl --data as printed, with its trailing
# commas after the last sensor and the last device.
ADVANCED_INTEGRATION = """
{
    "integration": {
        "nodeId": "/api/B08851/node",
        "devices": [
            {
                "changeState": "new",
                "refId": "{{$guid}}",
                "props": {
                    "INTEGRATION_ID": "IMPORT_DEVICE_SDE",
                    "NAME": "Test Device",
                    "LOCATION": {
                        "type": "Point",
                        "coordinates": [
                            174.7805678,
                            -41.27834066,
                            20
                        ]
                    },
                    "NOTES":"Demo device"
                },
                "sensors": [
                    {
                        "changeState": "new",
                        "refId": "{{$guid}}",
                        "props": {
                            "NAME": "Test Sensor",
                            "SERIAL_NO":"1234",
                            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                            "LOCATION": {
                                "type": "Point",
                                "coordinates": [
                                    174.7805678,
                                    -41.25834066,
                                    65
                                ]
                            },
                            "UNKNOWN_UNITS": {
                                "0": "millimeter",
                                "1": "millimeter"
                            },
                            "UNKNOWN_METRICS": {
                                "0": "Alignment_Left_SD",
                                "1": "Alignment_Right_SD"
                            },
                            "NOTES":"Generic sensor"
                        }
                    },
                ]
            },
        ]
    }
}
"""

# "Create Connection, Device(s), and Sensor(s)": the curl --data as printed; it ends with a
# space, a newline and a space after the closing brace.
SIMPLE_INTEGRATION = (
    """{
    "integration": {
        "changeState": "new",
        "devices": [
            {
                "changeState": "new",
                "props": {
                    "INTEGRATION_ID": "IMPORT_DEVICE_SDE",
                    "NAME": "Device-1"
                },
                "sensors": [
                    {
                        "changeState": "new",
                        "props": {
                            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                            "NAME": "Sensor-1",
                            "UNKNOWN_UNITS": {
                                "0": "millimeter",
                                "1": "millimeter"
                            },
                            "UNKNOWN_METRICS": {
                                "0": "Alignment_Left_SD",
                                "1": "Alignment_Right_SD"
                            }
                        }
                    },
                    {
                        "changeState": "new",
                        "props": {
                            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                            "NAME": "Sensor-2",
                            "UNKNOWN_UNITS": {
                                "0": "millimeter",
                                "1": "millimeter"
                            },
                            "UNKNOWN_METRICS": {
                                "0": "Alignment_Left_SD",
                                "1": "Alignment_Right_SD"
                            }
                        }
                    }
                ]
            }
        ]
    }
}"""
    + " \n "
)
