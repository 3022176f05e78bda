"""Apps' endpoints: daily check-ins."""
