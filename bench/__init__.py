"""thinghub benchmarks: throughput against a reference measured in the same run (not tests)."""
