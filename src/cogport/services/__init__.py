"""Background services: loops with ``start``/``stop``, owned by the app's lifespan."""
