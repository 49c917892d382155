"""Usage statuses: ``rejected`` is now ``rate_limited``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE usage SET status = 'rate_limited' WHERE status = 'rejected'")


def downgrade() -> None:
    op.execute("UPDATE usage SET status = 'rejected' WHERE status = 'rate_limited'")
