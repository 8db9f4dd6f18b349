import pytest

from xtc.core.exclude import Exclusions, is_excluded


@pytest.mark.parametrize("path", [".env", "app/.env.local", "/home/u/p/server.pem", "k/id_rsa.pub",
                                  "certs/a.p12", ".netrc", "aws/credentials", "conf/secrets.yaml",
                                  ".git/config", "/home/u/p/deploy.key"])
def test_secrets_are_excluded_by_default(path):
    assert is_excluded(path)


@pytest.mark.parametrize("path", ["src/main.py", "environment.py", "README.md", "keys.py", "/home/u/p/a.ts"])
def test_ordinary_sources_are_not_excluded(path):
    assert not is_excluded(path)


def test_user_patterns_add_to_the_defaults():
    ex = Exclusions(["generated/", "*.min.js"], root="/home/u/p")
    assert ex.match("/home/u/p/generated/x.py") and ex.match("/home/u/p/web/a.min.js")
    assert ex.match("/home/u/p/.env") and not ex.match("/home/u/p/web/a.js")
