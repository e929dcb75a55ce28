"""The router package."""
