"""The web client for the people at the desks: a page the router serves at ``/``.

The page is static files (``static/``: HTML, one script, one style sheet, the strings
of every language in one file) that use the HTTP API like any other client.  What is
the web's own: the session cookie (``sessions``), the checks that keep other sites
from using it (``sessions.cross_site_refusal``) and the page's security headers
(``page``).  ``build`` makes them; ``callrouter.api.build`` composes them.
"""
