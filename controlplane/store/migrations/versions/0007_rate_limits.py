"""Rate limits: a key's requests per minute, tokens per minute and requests in flight.

The limits are columns of `keys` (NULL: none); `rate_buckets` holds a limited key's
counters (controlplane/ratelimits.py), created at its first request; a reservation
records what it holds of them, so that settling, releasing or expiring it gives that back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("rpm_limit", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("tpm_limit", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_parallel_requests", sa.Integer(), nullable=True))
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("requests", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("slots", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("requests_level", sa.BigInteger(), nullable=False),
        sa.Column("tokens_level", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("slots")
        batch.drop_column("tokens")
        batch.drop_column("requests")
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("max_parallel_requests")
        batch.drop_column("tpm_limit")
        batch.drop_column("rpm_limit")
