//! Raw events to usage metadata: normalizes the raw topic into schema-registered records.
