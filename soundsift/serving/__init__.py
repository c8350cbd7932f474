"""The HTTP service: FastAPI routers, guards, the micro-batcher, the service core and the page."""
