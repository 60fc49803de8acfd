"""Threshold webhooks: an endpoint per account, key and wallet thresholds, and the outbox
the ledger writes events to in the transaction that commits the spend.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "key_thresholds",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("percents", sa.String(length=400), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "wallet_thresholds",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("low_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_token", sa.String(length=40), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=False),
        sa.Column("delivered_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id", name="uq_webhook_outbox_event_id"),
    )
    op.create_index("ix_webhook_outbox_status_next", "webhook_outbox", ["status", "next_attempt_ms"])
    op.create_index("ix_webhook_outbox_account_seq", "webhook_outbox", ["account_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_account_seq", table_name="webhook_outbox")
    op.drop_index("ix_webhook_outbox_status_next", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_table("wallet_thresholds")
    op.drop_table("key_thresholds")
    op.drop_table("webhook_endpoints")
