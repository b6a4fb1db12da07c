"""topology/backends package."""
