"""Non-token units: audio tokens, characters, audio time and images, on events and prices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EVENT_COLUMNS = ("audio_input_tokens", "audio_output_tokens", "characters", "audio_ms", "images")
PRICE_COLUMNS = (
    "audio_input_micros_per_mtok",
    "audio_output_micros_per_mtok",
    "characters_micros_per_mchar",
    "audio_seconds_micros_per_msec",
    "images_micros_per_mimage",
)


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        for name in EVENT_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("prices") as batch:
        for name in PRICE_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        for name in PRICE_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("usage_events") as batch:
        for name in EVENT_COLUMNS:
            batch.drop_column(name)
