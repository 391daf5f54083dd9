"""Issue 16, finding 8 (slow clients): the README requires the buffering proxy that fixes it.

gunicorn's thread workers are held by slow bodies; the remedy is a buffering reverse proxy
with header and body timeouts in front. tests/deploy/test_nginx.py checks the nginx sample's
directives and shows, live, /health starving straight to gunicorn and answering through the
sample. What it does not check is that operators are told the proxy is required: this does.

The red team's version also expected /health to keep answering with slow bodies sent
straight to gunicorn. That is the very gap the required proxy exists for (gunicorn alone
cannot time out a slow body without taking a thread), so that part was dropped; and its
check of the sample's directives repeated test_nginx.py's.
"""

from __future__ import annotations

from tests.support import ROOT


def test_the_readme_deploy_section_requires_a_buffering_proxy_with_timeouts():
    readme = (ROOT / "README.md").read_text()
    assert "\n## Deploy\n" in readme, "the README has no Deploy section"
    deploy = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    words = " ".join(deploy.replace("*", "").lower().split())
    assert "a buffering reverse proxy with header and body timeouts is required in front of gunicorn" in words
    assert "deploy/nginx/kamiyo.conf" in deploy
