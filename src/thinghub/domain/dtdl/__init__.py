"""DTDL (Digital Twins Definition Language) v2/v3: the capability model of a device template.

parser.py turns a template body into its stored document and a parsed Interface; model.py
holds the parsed model (telemetry with schema and unit, properties, commands, components) and
the DeviceTemplate; schemas.py the schemas and the check of a JSON value against one;
well_known.py public sample models by the model id devices announce. Standard library only,
like the rest of the domain.
"""

from thinghub.domain.dtdl.model import (
    CommandDef,
    CommandPayload,
    DeviceTemplate,
    Interface,
    PropertyDef,
    TelemetryDef,
)
from thinghub.domain.dtdl.parser import (
    DTDL_NAME,
    MAX_DOCUMENT_DEPTH,
    MAX_EXTENDS_DEPTH,
    MAX_SCHEMA_DEPTH,
    MAX_TEMPLATE_ID_CHARS,
    MODEL_TYPES,
    TEMPLATE_ID,
    WELL_KNOWN_INTERFACES,
    parse_template,
    parse_template_id,
)
from thinghub.domain.dtdl.schemas import (
    PRIMITIVES,
    ArraySchema,
    EnumSchema,
    MapSchema,
    ObjectSchema,
    Primitive,
    Schema,
    check_value,
    describe,
)
from thinghub.domain.dtdl.well_known import WELL_KNOWN_MODELS, well_known_model

__all__ = [
    "DTDL_NAME",
    "MAX_DOCUMENT_DEPTH",
    "MAX_EXTENDS_DEPTH",
    "MAX_SCHEMA_DEPTH",
    "MAX_TEMPLATE_ID_CHARS",
    "MODEL_TYPES",
    "PRIMITIVES",
    "TEMPLATE_ID",
    "WELL_KNOWN_INTERFACES",
    "WELL_KNOWN_MODELS",
    "ArraySchema",
    "CommandDef",
    "CommandPayload",
    "DeviceTemplate",
    "EnumSchema",
    "Interface",
    "MapSchema",
    "ObjectSchema",
    "Primitive",
    "PropertyDef",
    "Schema",
    "TelemetryDef",
    "check_value",
    "describe",
    "parse_template",
    "parse_template_id",
    "well_known_model",
]
