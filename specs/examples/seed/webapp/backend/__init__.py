"""tasks-webapp: the backend."""
