"""The HTTP side of the core: the front server, request buffering and forwarding to apps."""
