"""Price rules (prompt-length tiers, time-of-day windows, service tiers), one-hour cache
writes, image input, web and file searches and per-request fees; events record what priced them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EVENT_COLUMNS = ("cache_write_1h_tokens", "image_input_tokens", "web_searches", "file_searches")
PRICE_COLUMNS = (
    "cache_write_1h_micros_per_mtok",
    "image_input_micros_per_mtok",
    "web_search_micros_per_mcall",
    "request_micros_per_mrequest",
    "file_search_micros_per_mcall",
)


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        for name in EVENT_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("service_tier", sa.String(40), nullable=False, server_default=""))
        batch.add_column(sa.Column("price_rules", sa.String(200), nullable=False, server_default=""))
    with op.batch_alter_table("prices") as batch:
        for name in PRICE_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("rules", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        batch.drop_column("rules")
        for name in PRICE_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("price_rules")
        batch.drop_column("service_tier")
        for name in EVENT_COLUMNS:
            batch.drop_column(name)
