"""Per-environment success rates over fixed, versioned episode seeds."""
