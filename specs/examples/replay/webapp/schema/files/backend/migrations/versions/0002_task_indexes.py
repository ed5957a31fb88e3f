"""Indexes for the task board: a project's tasks by status, and a user's assigned tasks."""

revision = "0002"
down_revision = "0001"


def upgrade(conn):
    conn.executescript(
        """
        CREATE INDEX tasks_by_project_status ON tasks (project_id, status, id);
        CREATE INDEX tasks_by_assignee ON tasks (assignee_id) WHERE assignee_id IS NOT NULL;
        """
    )


def downgrade(conn):
    conn.executescript("DROP INDEX tasks_by_assignee; DROP INDEX tasks_by_project_status;")
