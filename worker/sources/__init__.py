"""Sources produce :class:`~worker.records.RawRecord` batches; they never know the sinks."""
