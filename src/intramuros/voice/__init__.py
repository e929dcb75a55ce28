"""The voice workload."""
