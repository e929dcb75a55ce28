"""The kyc workload."""
