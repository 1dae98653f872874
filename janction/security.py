"""Content-Security-Policy on every HTML page: scripts, styles and everything else only from this site.

The site's own pages have no inline script or style (their JS and CSS are static files), so the policy
allows none. The API docs pages run Swagger UI and Redoc, which add inline styles while rendering (and
Redoc a search worker from a blob: URL); only those pages get JANCTION_CSP_DOCS, which allows that.
"""

from django.conf import settings

DOCS_PATHS = ("/api/docs/", "/api/redoc/")


class ContentSecurityPolicyMiddleware:
    """Add the Content-Security-Policy header to HTML responses."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and "Content-Security-Policy" not in response:
            docs = request.path.startswith(DOCS_PATHS)
            response["Content-Security-Policy"] = settings.JANCTION_CSP_DOCS if docs else settings.JANCTION_CSP
        return response
