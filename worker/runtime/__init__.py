"""``worker daemon``'s parts: KCL properties, the launcher process, the health/metrics endpoint."""
