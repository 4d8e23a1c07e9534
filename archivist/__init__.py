"""The archive application over the `stylegan` model library: one pipeline from an original to a signed,
recorded result in a folder or in the archive (`pipeline`), the archive and its catalogue formats,
provenance and Content Credentials, batch reading, thumbnails, post-processing and the command line
(`python -m archivist`)."""
