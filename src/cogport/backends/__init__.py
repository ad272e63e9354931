"""Execution behind one narrow interface (:class:`cogport.backends.base.Backend`)."""
