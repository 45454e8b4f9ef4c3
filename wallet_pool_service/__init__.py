"""The wallet pool service: deposit addresses, their allocation, and the waiting queue."""
