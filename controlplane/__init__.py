"""spendgate control plane: accounts, keys, caps, reservations, the catalog and usage, over gRPC."""
