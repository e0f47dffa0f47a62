"""Wire contracts: one module per topic family, frozen pydantic models, versioned types."""
