"""Outgoing webhooks: Standard Webhooks signing, throttled events, durable terminal deliveries."""
