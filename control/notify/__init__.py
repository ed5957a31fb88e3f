"""Notifications: events of the stream (control.events) delivered to people's services
(a signed webhook, Slack, anything Apprise reaches) from an outbox in the state
database, in a thread of their own so that a sink that is down never slows a run."""
