"""Applications built on edgesplit's public APIs."""
