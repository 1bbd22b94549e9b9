"""Business rules. No HTTP here: routers translate ServiceError into responses."""
