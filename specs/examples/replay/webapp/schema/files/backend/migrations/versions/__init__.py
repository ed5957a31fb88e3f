"""One module per revision: `revision`, `down_revision`, `upgrade(conn)`, `downgrade(conn)`."""
