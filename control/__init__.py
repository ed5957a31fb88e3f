"""superagent: run AI coding agents across a fleet of your own machines.

The `control` package holds the library (queue, specs, scheduler, orchestrator,
transports, worker) and the `control` command line that drives it.
"""

__version__ = "0.1.0"
