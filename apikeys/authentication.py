"""``Authorization: Api-Key <secret>`` for DRF: the authentication class, the principal it
signs in, the per-key throttle and the OpenAPI security scheme.

Views list ``ApiKeyAuthentication`` next to the JWT one where a key's scope allows them (the
analytics reads, ingest); the staff endpoints list ``ApiKeyNotAccepted``, whose 401 says a key
is not taken there (the request would otherwise be anonymous: "credentials were not
provided"). What a key may do is checked by the views' permissions against ``request.auth``
(an ``ApiKeyGrant``).
"""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework_api_key.permissions import KeyParser

from api.permissions import WindowThrottle
from apikeys.services import ApiKeyGrant, ApiKeyInvalid, api_key_authenticate, api_key_grant

KEYWORD = KeyParser.keyword


class ApiKeyUser:
    """The user a key acts for, known without a database query (from the cached grant).

    Not staff, whatever the user is: a key has its scope's rights only. Endpoints that need the
    user's own permissions (ingest) look the user up.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, grant: ApiKeyGrant) -> None:
        self.pk = self.id = grant.user_id
        self.username = grant.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.username} (API key)"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>``; any other header is left to the others."""

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKeyGrant] | None:
        key = KeyParser().get_from_authorization(request)
        if key is None:
            return None
        try:
            grant = api_key_authenticate(key=key.strip())
        except ApiKeyInvalid as refused:
            raise AuthenticationFailed(str(refused)) from None
        return ApiKeyUser(grant), grant

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class ApiKeyNotAccepted(BaseAuthentication):
    """Last on a staff endpoint: ``Authorization: Api-Key ...`` there is a 401 saying why."""

    def authenticate(self, request: Request) -> None:
        if KeyParser().get_from_authorization(request) is not None:
            raise AuthenticationFailed(
                "An API key is not accepted here: this endpoint needs a staff user's token "
                "(Authorization: Bearer ...)."
            )
        return None


class ApiKeyThrottle(WindowThrottle):
    """Per API key (``API_KEY_THROTTLE``), whatever the endpoint; other requests pass."""

    scope = "api_key"

    def ident(self, request: Request) -> str | None:
        grant = api_key_grant(request)
        return grant.prefix if grant is not None else None


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apikeys.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Authorization: Api-Key <secret>`, a key created in the admin (API keys → Add; "
                "the secret is shown once). Its scope (`read`, `ingest` or both) says where it "
                "is accepted; another endpoint answers 401, one outside its scope 403. A read "
                "key restricted to an author answers for that author's blogs only. Throttled "
                "per key (`API_KEY_THROTTLE`)."
            ),
        }


class ApiKeyNotAcceptedScheme(OpenApiAuthenticationExtension):
    """No security scheme of its own: it only refuses keys (the schema lists none for them)."""

    target_class = "apikeys.authentication.ApiKeyNotAccepted"
    name: list[str] = []

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return []

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return []
