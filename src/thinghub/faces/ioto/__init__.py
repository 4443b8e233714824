"""The Embedthis Ioto face: device API wire schemas, the S3-compatible file endpoint's wire."""
