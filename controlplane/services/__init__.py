"""The gRPC servicers: thin translations between protobuf and the domain."""
