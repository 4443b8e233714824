"""Use cases over the ports. Faces and device adapters call these, never storage."""
