"""Revision scripts, oldest first: 0001 the first release's schema, 0002 API keys and owners."""
