"""The core model: plain data and rules, no I/O, no framework imports."""
