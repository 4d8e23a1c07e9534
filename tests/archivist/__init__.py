"""The archive application: archive, provenance, Content Credentials, the pipeline and the command line."""
