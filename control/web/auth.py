"""Who may see the dashboard and who may act through it.

Read-only by default and bound to loopback. A token (from the environment or a 0600
file, never argv) is required to bind anywhere else and to enable actions; with a
token, every page needs a session, which signing in with the token gives (an HttpOnly,
SameSite=Strict cookie derived from it). An action (retry, cancel) also needs the
form's CSRF value and a same-origin request: a page on another site cannot make a
signed-in browser act.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from control.errors import UsageError

TOKEN_ENV = "SUPERAGENT_DASHBOARD_TOKEN"  # noqa: S105 (the variable's name)
MIN_TOKEN_CHARS = 16
COOKIE = "sa_session"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None, env: Mapping[str, str]) -> str | None:
    """The token from `--token-file` (which must not be readable by others), else
    $SUPERAGENT_DASHBOARD_TOKEN, else None."""
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(
                f"--token-file {token_file}: readable by others (mode {mode & 0o777:04o}); "
                "chmod 600 it"
            )
    else:
        text = env.get(TOKEN_ENV, "").strip()
        if not text:
            return None
    if len(text) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"the dashboard token has {len(text)} characters; it needs at least "
            f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"
        )
    return text


@dataclass(frozen=True)
class Access:
    """The policy of one running dashboard."""

    token: str | None = None
    actions: bool = False

    @classmethod
    def for_binding(cls, host: str, token: str | None, actions: bool) -> Access:
        """Refuse, before anything listens, a binding the token does not cover."""
        if actions and token is None:
            raise UsageError(
                f"--actions needs a token: set {TOKEN_ENV} or pass --token-file "
                "(retry and cancel are never open to whoever can reach the page)"
            )
        if not is_loopback(host) and token is None:
            raise UsageError(
                f"--host {host} is reachable from other machines: set {TOKEN_ENV} or pass "
                "--token-file, or keep 127.0.0.1 behind your reverse proxy (docs/dashboard.md)"
            )
        return cls(token=token, actions=actions)

    def _derive(self, purpose: str) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def needs_sign_in(self) -> bool:
        return self.token is not None

    def session(self) -> str:
        return self._derive("session")

    def csrf(self) -> str:
        return self._derive("csrf")

    def token_matches(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            offered.strip().encode(), self.token.encode()
        )

    def signed_in(self, cookie: str | None) -> bool:
        if self.token is None:
            return True
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session().encode())

    def may_act(
        self, cookie: str | None, csrf: str | None, headers: Mapping[str, str], host: str
    ) -> str | None:
        """Why an action request is refused, or None when it may go ahead."""
        if not self.actions or self.token is None:
            return "actions are not enabled (start `control serve --actions` with a token)"
        if not self.signed_in(cookie):
            return "not signed in with the dashboard token"
        if csrf is None or not hmac.compare_digest(csrf.encode(), self.csrf().encode()):
            return "the form's CSRF value is missing or wrong"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "a cross-site request"
        origin = headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != host:
            return "a cross-origin request"
        return None
