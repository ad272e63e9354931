"""Data operations. They take a session, flush when they must, and never commit."""
