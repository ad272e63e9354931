"""The HTTP layer: routes, dependencies, problem responses, presenters."""
