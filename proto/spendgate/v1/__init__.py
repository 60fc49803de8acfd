"""Generated protobuf and gRPC code for spendgate.v1 (rebuild: python proto/generate.py)."""
