"""The app's response class: Flask's Response, handed to the WSGI server without werkzeug's generic header fix-ups
when a response needs none.

Werkzeug copies every response's headers before sending them and scans the copy for a Location or
Content-Location to make absolute, a Content-Length to compute, and the statuses whose headers it trims (1xx, 204,
304). An API answer (JSON with its length, the request ids) needs none of that: the copy and the scan were about a
twentieth of an API GET (issue #12). When the response has no Location or Content-Location header, a status of 200
or more other than 204 and 304, and a Content-Length (or a body werkzeug would not measure), its own header list is
sent as is, which is exactly what werkzeug's fix-ups leave; anything else takes werkzeug's path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Response


class ArmResponse(Response):
    def get_wsgi_response(self, environ: dict[str, Any]) -> tuple[Iterable[bytes], str, list[tuple[str, str]]]:
        status = self.status_code
        if status >= 200 and status != 204 and status != 304:
            headers = self.headers
            has_length = False
            for key, _value in headers:
                ikey = key.lower()
                if ikey == "content-length":
                    has_length = True
                elif ikey == "location" or ikey == "content-location":
                    return super().get_wsgi_response(environ)
            if has_length or not (self.automatically_set_content_length and self.is_sequence):
                return self.get_app_iter(environ), self.status, headers.to_wsgi_list()
        return super().get_wsgi_response(environ)
