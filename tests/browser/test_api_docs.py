"""/api/v1/docs renders in a real browser with no network beyond this machine.

Swagger UI is served from django-ninja's own static files (`ninja` is an installed app),
not from a CDN: every request to a host other than 127.0.0.1 is aborted, and the page
must still show the API and its operations.
"""

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_api_docs_render_with_every_outside_request_blocked(page):
    blocked, served = [], []

    def only_this_machine(route):
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            served.append(url)
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.context.route("**/*", only_this_machine)
    page.goto("/api/v1/docs")
    page.locator(".swagger-ui .info .title").filter(has_text="Modelyard API").wait_for()
    operations = page.locator(".swagger-ui .opblock")
    operations.first.wait_for()
    assert operations.count() >= 20
    assert page.locator(".opblock-summary-path", has_text="/api/v1/models/{key}").count() >= 1
    shot(page, "api-docs-offline")
    assert any("/static/ninja/swagger-ui-bundle" in url for url in served), served
    assert not blocked, blocked  # nothing outside was even asked for
