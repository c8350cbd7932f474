"""The HTTP service: FastAPI routers, guards, the service core over one model engine, and the page."""
