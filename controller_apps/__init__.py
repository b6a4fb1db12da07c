"""controller_apps package."""
