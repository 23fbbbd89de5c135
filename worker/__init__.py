"""worker: DynamoDB Streams change processing with an exactly-once effect per sink."""

__version__ = "0.1.0"
