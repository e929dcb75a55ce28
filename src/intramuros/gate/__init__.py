"""The gate every call passes: tenants, keys, roles, policies, personal data, quotas."""
