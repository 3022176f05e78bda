"""Partner platforms' endpoints: action events that earn drivers data."""
