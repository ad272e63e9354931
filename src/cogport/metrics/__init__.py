"""Prometheus metrics: one registry per app (:class:`~cogport.metrics.registry.Metrics`), fed by hooks
registered once in the app factory, plus gauges computed at scrape time (:mod:`cogport.metrics.state`)."""
