"""The HTTP API: the framework stand-in (web), the app factory (main) and the routers."""
