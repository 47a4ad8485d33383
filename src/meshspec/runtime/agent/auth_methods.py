"""ACL auth methods and binding rules: who may log in with what, and which grants the token gets.

Pure (no store, no HTTP): an auth method's definition checked as Consul checks it, a bearer JWT
verified against the method's configuration (PyJWT: signature by one of
`JWTValidationPubKeys`, `BoundIssuer`, `BoundAudiences`, expiry and not-before with their
leeways), its claims mapped to the variables binding rules select on (`value.<name>` from
`ClaimMappings`, `list.<name>` from `ListClaimMappings`), and each matching rule's bind name
filled in (`${value.name}`).

Only the `jwt` type is offered with keys given in its configuration: a JWKS URL, OIDC discovery,
Kubernetes' TokenReview and AWS IAM all need a service this agent cannot reach (README).
"""

from __future__ import annotations

import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from meshspec.common.durations import go_duration, parse_duration
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_filter

TYPES = ("jwt", "kubernetes", "oidc", "aws-iam")
BIND_TYPES = ("service", "node", "role", "policy")
LOCALITIES = ("", "local", "global")
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _lower(raw: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}


def method_of(fields: dict[str, Any], name: str) -> dict[str, Any]:
    """An auth method from a request's lowercased fields, or Consul's 400."""
    kind = str(fields.get("type") or "")
    if kind not in TYPES:
        raise ConsulError(400, f'Invalid Auth Method: Type should be one of: {", ".join(TYPES)}')
    if kind != "jwt":
        raise ConsulError(400, f"Invalid Auth Method: type {kind!r} needs a service this agent cannot reach "
                               "(Kubernetes, an OIDC provider, AWS); it offers jwt with JWTValidationPubKeys")
    config = dict(fields.get("config") or {})
    keys = _lower(config).get("jwtvalidationpubkeys") or []
    if any(_lower(config).get(k) for k in ("jwksurl", "oidcdiscoveryurl")):
        raise ConsulError(400, "Invalid Auth Method: JWKSURL and OIDCDiscoveryURL need a network this agent does not "
                               "reach: give JWTValidationPubKeys")
    if not keys:
        raise ConsulError(400, "Invalid Auth Method: exactly one of 'JWKSURL', 'JWTValidationPubKeys', or "
                               "'OIDCDiscoveryURL' must be set for 'jwt'")
    for key in keys:
        try:
            _public_key(key)
        except (ValueError, TypeError) as err:
            raise ConsulError(400, f"Invalid Auth Method: error parsing public key: {err}") from None
    locality = str(fields.get("tokenlocality") or "")
    if locality not in LOCALITIES:
        raise ConsulError(400, f"Invalid Auth Method: TokenLocality should be one of 'local' or 'global', got {locality!r}")
    ttl = fields.get("maxtokenttl") or ""
    try:
        max_ttl = go_duration(parse_duration(ttl)) if ttl else ""
    except ValueError as err:
        raise ConsulError(400, f"Invalid Auth Method: MaxTokenTTL: {err}") from None
    return {"Name": name, "Type": kind, "DisplayName": str(fields.get("displayname") or ""),
            "Description": str(fields.get("description") or ""), "MaxTokenTTL": max_ttl,
            "TokenLocality": locality, "Config": config}


def _public_key(pem: str) -> PublicKeyTypes:
    return load_pem_public_key(str(pem).encode())


def verified_claims(method: dict[str, Any], bearer: str) -> dict[str, Any]:
    """The claims of `bearer` once one of the method's keys verifies it and its bounds hold; else 403."""
    config = _lower(method["Config"])
    audiences = list(config.get("boundaudiences") or [])
    leeway = max(parse_duration(config.get("clockskewleeway") or 0), parse_duration(config.get("expirationleeway") or 0))
    algorithms = list(config.get("jwtsupportedalgs") or ALGORITHMS)
    failure = "no key verified it"
    for pem in config.get("jwtvalidationpubkeys") or []:
        try:
            return jwt.decode(bearer, _public_key(pem), algorithms=algorithms, audience=audiences or None,
                              issuer=config.get("boundissuer") or None, leeway=leeway,
                              options={"verify_aud": bool(audiences), "require": []})
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as err:
            failure = str(err)
            break
    raise ConsulError(403, f"Permission denied: the bearer token was not accepted: {failure}")


def variables(method: dict[str, Any], claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What binding rules select on: `value.<name>` and `list.<name>` from the claim mappings."""
    config = _lower(method["Config"])

    def claim(path: str) -> Any:
        found: Any = claims
        for part in path.strip("/").split("/"):
            found = found.get(part) if isinstance(found, dict) else None
        return found

    values = {name: str(claim(c)) for c, name in (config.get("claimmappings") or {}).items() if claim(c) is not None}
    lists = {name: [str(v) for v in (claim(c) if isinstance(claim(c), list) else [claim(c)] if claim(c) else [])]
             for c, name in (config.get("listclaimmappings") or {}).items()}
    return {"value": values, "list": lists}


def rule_of(fields: dict[str, Any], methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A binding rule from a request's lowercased fields, or Consul's 400."""
    method = str(fields.get("authmethod") or "")
    if method not in methods:
        raise ConsulError(400, f"Invalid Binding Rule: unknown auth method {method!r}" if method
                          else "Invalid Binding Rule: no AuthMethod is set")
    bind_type = str(fields.get("bindtype") or "")
    if bind_type not in BIND_TYPES:
        raise ConsulError(400, f"Invalid Binding Rule: unknown BindType {bind_type!r}")
    bind_name = str(fields.get("bindname") or "")
    if not bind_name:
        raise ConsulError(400, "Invalid Binding Rule: no BindName is set")
    selector = str(fields.get("selector") or "")
    try:
        compile_filter(selector)
    except ConsulError as err:
        raise ConsulError(400, f"invalid Binding Rule: Selector is invalid: {err.message}") from None
    return {"Description": str(fields.get("description") or ""), "AuthMethod": method, "Selector": selector,
            "BindType": bind_type, "BindName": bind_name}


def bound(rule: dict[str, Any], found: dict[str, dict[str, Any]]) -> str | None:
    """The rule's bind name filled from `found`, if its selector matches them; None when it does not,
    or when the name uses a variable the login did not map (Consul skips such a rule)."""
    predicate = compile_filter(rule["Selector"])
    if predicate is not None and not predicate(found):
        return None
    missing = False

    def fill(match: re.Match) -> str:
        nonlocal missing
        scope, _, name = match.group(1).strip().partition(".")
        value = found.get(scope, {}).get(name)
        if value is None or isinstance(value, list):
            missing = True
            return ""
        return str(value)

    name = _VARIABLE.sub(fill, rule["BindName"])
    return None if missing or not name else name
