"""What both services truly share: configuration, database, logging, gRPC server plumbing."""
