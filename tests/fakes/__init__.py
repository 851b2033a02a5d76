"""Loopback fakes that speak real wire formats (OpenAI, Gemini, S3, Kubernetes)."""
