"""A node: chain, mempool, block production, HTTP API, client."""
