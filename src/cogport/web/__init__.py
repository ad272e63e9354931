"""The web playground, served by cogport itself: server-rendered pages (``templates/``) with a little
JavaScript (``static/``) that calls the same ``/v1`` API as any client, signed in by an HttpOnly cookie.
Nothing is fetched from outside the server."""
