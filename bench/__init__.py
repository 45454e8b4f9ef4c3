"""The benchmark suite (`make bench`): both services as real processes on PostgreSQL, load
from separate processes, every figure beside a floor measured in the same run."""
