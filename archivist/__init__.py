"""The archive application over the `stylegan` model library: stylising uploads and files into signed,
recorded results (`jobs`), the archive and its catalogue formats, provenance and Content Credentials,
batch reading, thumbnails, post-processing and the command line (`python -m archivist`)."""
