"""topology/effects package."""
