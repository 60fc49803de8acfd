"""Key lifecycle: an expiry on a key, and the previous secret a rotation keeps for a grace period.

`old_secret_sha256` is the digest of the secret a rotation replaced; it authenticates the same key
until `old_secret_expires_ms`. A unique index keeps a digest pointing at one key (NULLs repeat on
both engines).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("expires_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("old_secret_sha256", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("old_secret_expires_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("rotated_ms", sa.BigInteger(), nullable=True))
    op.create_index("ix_keys_old_secret_sha256", "keys", ["old_secret_sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_keys_old_secret_sha256", table_name="keys")
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("rotated_ms")
        batch.drop_column("old_secret_expires_ms")
        batch.drop_column("old_secret_sha256")
        batch.drop_column("expires_ms")
