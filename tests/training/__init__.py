"""Training, export and publishing."""
