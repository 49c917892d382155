"""HTTP layer: app factory, routes, OpenAI-shaped errors, SSE."""
