"""The web dashboard (`control serve`): runs, a run's graph, the fleet and the costs,
read from the state database and kept live from the event stream (docs/dashboard.md)."""
