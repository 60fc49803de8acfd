"""The typed Python client over the generated stubs, and the spendgate CLI."""
