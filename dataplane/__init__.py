"""spendgate data plane (see issue: data plane)."""
