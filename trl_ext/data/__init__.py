"""Task data: GSM8K-style problems and code tasks (hub, local files, generated) and the embedded default model."""
