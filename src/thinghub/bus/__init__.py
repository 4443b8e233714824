"""The live bus and per-node state: in-memory implementations of the bus and cluster ports.

`memory` holds what one process needs (MemoryBus, MemoryPresence, MemoryLocks,
MemoryCounter); a NATS implementation of the same ports will sit beside it. Only the
composition root (app.py, cli.py) picks one.
"""
