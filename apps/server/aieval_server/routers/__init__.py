"""HTTP routes under /api/v1: thin, they parse, call a service and shape the response."""
