"""Minimal ASGI plumbing: requests, responses, server-sent events."""
