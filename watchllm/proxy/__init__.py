"""Providers behind one seam: OpenAI-compatible, Anthropic (translated), and a mock."""
