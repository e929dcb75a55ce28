"""The docai workload."""
