"""Stand-ins for outside programs (a fake `claude` CLI) and helpers to drive them."""
