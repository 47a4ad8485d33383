"""Decoding of service and check definitions the way Consul's HTTP API accepts them.

Keys are matched case- and underscore-insensitively (py-consul sends `name`, `serviceid`,
`tagged_addresses`); user maps (Meta, Header, TaggedAddresses names) keep their keys.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.errors import ConsulError, bad_request, decode_failed

STATUSES = ("passing", "warning", "critical")
INVALID_CHECK = "Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/H2PING/GRPC/AliasNode/AliasService and Interval"
MIN_INTERVAL = 1.0  # Consul raises shorter intervals to one second
DEFAULT_WEIGHTS = {"Passing": 1, "Warning": 1}

SERVICE_FIELDS = (
    "ID", "Name", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "SocketPath", "Kind", "Proxy",
    "Connect", "Check", "Checks", "EnableTagOverride", "Weights", "Token", "Namespace", "Partition", "Locality",
)
CHECK_FIELDS = (
    "CheckID", "Name", "Notes", "ServiceID", "Status", "ScriptArgs", "DockerContainerID", "Shell", "HTTP", "Header", "Method", "Body",
    "DisableRedirects", "TCP", "TCPUseTLS", "UDP", "OSService", "H2PING", "H2PingUseTLS", "Interval", "Timeout",
    "TTL", "TLSServerName", "TLSSkipVerify", "GRPC", "GRPCUseTLS", "DockerContainerID", "Shell", "AliasNode",
    "AliasService", "OutputMaxSize", "SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical",
    "DeregisterCriticalServiceAfter", "Token", "Namespace", "Partition",
)
# Alternative spellings Consul itself accepts (e.g. "id" for CheckID, "args" for ScriptArgs).
CHECK_ALIASES = {"id": "CheckID", "args": "ScriptArgs", "serviceid": "ServiceID"}


def _canon(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _index(fields: tuple[str, ...], aliases: dict[str, str] | None = None) -> dict[str, str]:
    table = {_canon(f): f for f in fields}
    table.update(aliases or {})
    return table


_SERVICE_KEYS = _index(SERVICE_FIELDS)
_CHECK_KEYS = _index(CHECK_FIELDS, CHECK_ALIASES)


def normalize(raw: Any, table: dict[str, str], what: str) -> dict[str, Any]:
    """Top-level keys of `raw` renamed to their canonical spelling; unknown keys are ignored like Consul."""
    if not isinstance(raw, dict):
        raise decode_failed(f"json: cannot unmarshal {_json_type(raw)} into Go value of type structs.{what}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = table.get(_canon(str(key)))
        if canonical is not None:
            out[canonical] = value
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _expect(value: Any, kinds: tuple[type, ...], struct: str, field: str, go_type: str) -> Any:
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise decode_failed(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.{field} of type {go_type}"
        )
    return value


def _str_list(value: Any, struct: str, field: str) -> list[str]:
    if value is None:
        return []
    _expect(value, (list,), struct, field, "[]string")
    return [_expect(v, (str,), struct, field, "string") for v in value]


def _str_map(value: Any, struct: str, field: str) -> dict[str, str]:
    if value is None:
        return {}
    _expect(value, (dict,), struct, field, "map[string]string")
    return {str(k): _expect(v, (str,), struct, field, "string") for k, v in value.items()}


def _int(value: Any, struct: str, field: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _expect(value, (int,), struct, field, "int")


def _bool(value: Any, struct: str, field: str) -> bool:
    if value is None:
        return False
    return _expect(value, (bool,), struct, field, "bool")


def _duration(value: Any, field: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise decode_failed(f"invalid duration for {field}: {exc}") from None


def _tagged_addresses(value: Any, port: int) -> dict[str, dict[str, Any]]:
    """Service TaggedAddresses as {name: {Address, Port}}; a bare string is accepted as the address."""
    if value is None:
        return {}
    _expect(value, (dict,), "ServiceDefinition", "TaggedAddresses", "map[string]structs.ServiceAddress")
    out = {}
    for name, entry in value.items():
        if isinstance(entry, str):
            out[str(name)] = {"Address": entry, "Port": port}
            continue
        fields = normalize(entry, {"address": "Address", "port": "Port"}, "ServiceAddress")
        out[str(name)] = {
            "Address": _expect(fields.get("Address", ""), (str,), "ServiceAddress", "Address", "string"),
            "Port": _int(fields.get("Port"), "ServiceAddress", "Port"),
        }
    return out


def _weights(value: Any) -> dict[str, int]:
    if value is None:
        return dict(DEFAULT_WEIGHTS)
    fields = normalize(value, {"passing": "Passing", "warning": "Warning"}, "Weights")
    return {
        "Passing": _int(fields.get("Passing"), "Weights", "Passing", 1),
        "Warning": _int(fields.get("Warning"), "Weights", "Warning", 1),
    }


def parse_check(raw: Any, script_checks: bool) -> dict[str, Any]:
    """A validated check definition (durations in seconds) from a request body or a service's Check(s)."""
    fields = normalize(raw, _CHECK_KEYS, "CheckDefinition")
    check: dict[str, Any] = {
        "CheckID": _expect(fields.get("CheckID") or "", (str,), "CheckDefinition", "ID", "string"),
        "Name": _expect(fields.get("Name") or "", (str,), "CheckDefinition", "Name", "string"),
        "Notes": _expect(fields.get("Notes") or "", (str,), "CheckDefinition", "Notes", "string"),
        "ServiceID": _expect(fields.get("ServiceID") or "", (str,), "CheckDefinition", "ServiceID", "string"),
        "Status": _expect(fields.get("Status") or "", (str,), "CheckDefinition", "Status", "string"),
        "ScriptArgs": _str_list(fields.get("ScriptArgs"), "CheckDefinition", "ScriptArgs"),
        "DockerContainerID": _expect(fields.get("DockerContainerID") or "", (str,), "CheckDefinition",
                                     "DockerContainerID", "string"),
        "Shell": _expect(fields.get("Shell") or "", (str,), "CheckDefinition", "Shell", "string"),
        "HTTP": _expect(fields.get("HTTP") or "", (str,), "CheckDefinition", "HTTP", "string"),
        "Header": _headers(fields.get("Header")),
        "Method": _expect(fields.get("Method") or "", (str,), "CheckDefinition", "Method", "string"),
        "Body": _expect(fields.get("Body") or "", (str,), "CheckDefinition", "Body", "string"),
        "DisableRedirects": _bool(fields.get("DisableRedirects"), "CheckDefinition", "DisableRedirects"),
        "TCP": _expect(fields.get("TCP") or "", (str,), "CheckDefinition", "TCP", "string"),
        "TLSServerName": _expect(fields.get("TLSServerName") or "", (str,), "CheckDefinition", "TLSServerName", "string"),
        "TLSSkipVerify": _bool(fields.get("TLSSkipVerify"), "CheckDefinition", "TLSSkipVerify"),
        "Interval": _duration(fields.get("Interval"), "Interval"),
        "Timeout": _duration(fields.get("Timeout"), "Timeout"),
        "TTL": _duration(fields.get("TTL"), "TTL"),
        "OutputMaxSize": _int(fields.get("OutputMaxSize"), "CheckDefinition", "OutputMaxSize", 4096) or 4096,
        "SuccessBeforePassing": _int(fields.get("SuccessBeforePassing"), "CheckDefinition", "SuccessBeforePassing"),
        "FailuresBeforeWarning": _int(fields.get("FailuresBeforeWarning"), "CheckDefinition", "FailuresBeforeWarning"),
        "FailuresBeforeCritical": _int(fields.get("FailuresBeforeCritical"), "CheckDefinition", "FailuresBeforeCritical"),
        "DeregisterCriticalServiceAfter": _duration(
            fields.get("DeregisterCriticalServiceAfter"), "DeregisterCriticalServiceAfter"
        ),
        "AliasService": _expect(fields.get("AliasService") or "", (str,), "CheckDefinition", "AliasService", "string"),
        "AliasNode": _expect(fields.get("AliasNode") or "", (str,), "CheckDefinition", "AliasNode", "string"),
    }
    if check["Status"] and check["Status"] not in STATUSES:
        raise bad_request("Status for checks must 'passing', 'warning', 'critical'")
    check["Type"] = check_type(check)
    if not check["Type"]:
        raise bad_request(INVALID_CHECK)
    if check["Type"] in ("script", "docker") and not script_checks:
        raise bad_request(
            "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
            "'enable_local_script_checks' to true"
        )
    if check["Type"] not in ("ttl", "alias") and check["Interval"] < MIN_INTERVAL:
        check["Interval"] = MIN_INTERVAL
    return check


def _headers(value: Any) -> dict[str, list[str]]:
    if value is None:
        return {}
    _expect(value, (dict,), "CheckDefinition", "Header", "map[string][]string")
    return {str(k): _str_list(v, "CheckDefinition", "Header") for k, v in value.items()}


def check_type(check: dict[str, Any]) -> str:
    """Consul's check Type; "" when the definition is not a runnable check."""
    if check["TTL"] > 0:
        return "ttl"
    if check["AliasService"] or check["AliasNode"]:
        return "alias"  # mirrors another service's (or node's) health; the agent keeps it in step
    has_interval = check["Interval"] > 0
    if check["DockerContainerID"] and check["ScriptArgs"] and has_interval:
        return "docker"  # Args run inside that container, through the Docker engine's exec API
    for field, kind in (("HTTP", "http"), ("TCP", "tcp"), ("ScriptArgs", "script")):
        if check[field] and has_interval:
            return kind
    return ""


def parse_service(raw: Any, script_checks: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The service record and its check definitions, validated like Consul's agent/service/register."""
    fields = normalize(raw, _SERVICE_KEYS, "ServiceDefinition")
    name = _expect(fields.get("Name") or "", (str,), "ServiceDefinition", "Name", "string")
    port = _int(fields.get("Port"), "ServiceDefinition", "Port")
    service = {
        "ID": _expect(fields.get("ID") or "", (str,), "ServiceDefinition", "ID", "string") or name,
        "Service": name,
        "Kind": _expect(fields.get("Kind") or "", (str,), "ServiceDefinition", "Kind", "string"),
        "Tags": _str_list(fields.get("Tags"), "ServiceDefinition", "Tags"),
        "Address": _expect(fields.get("Address") or "", (str,), "ServiceDefinition", "Address", "string"),
        "TaggedAddresses": _tagged_addresses(fields.get("TaggedAddresses"), port),
        "Meta": _str_map(fields.get("Meta"), "ServiceDefinition", "Meta"),
        "Port": port,
        "SocketPath": _expect(fields.get("SocketPath") or "", (str,), "ServiceDefinition", "SocketPath", "string"),
        "Weights": _weights(fields.get("Weights")),
        "EnableTagOverride": _bool(fields.get("EnableTagOverride"), "ServiceDefinition", "EnableTagOverride"),
        "Proxy": _object(fields.get("Proxy"), "Proxy"),
        "Connect": _object(fields.get("Connect"), "Connect"),
        "Locality": _object(fields.get("Locality"), "Locality") or None,
    }
    if not name:
        raise bad_request("Missing service name")
    if _is_any_address(service["Address"]):
        raise bad_request("Invalid service address")
    raw_checks = []
    if fields.get("Check") is not None:
        raw_checks.append(fields["Check"])
    if fields.get("Checks") is not None:
        raw_checks.extend(_expect(fields["Checks"], (list,), "ServiceDefinition", "Checks", "structs.CheckTypes"))
    checks = [parse_check(c, script_checks) for c in raw_checks if c]
    _name_service_checks(service, checks)
    return service, checks


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    return _expect(value, (dict,), "ServiceDefinition", field, "object")


def _is_any_address(address: str) -> bool:
    try:
        return bool(address) and ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _name_service_checks(service: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    """Consul's defaults: IDs "service:<id>" (":<n>" when several) and names "Service '<name>' check"."""
    for number, check in enumerate(checks, start=1):
        if not check["CheckID"]:
            suffix = f":{number}" if len(checks) > 1 else ""
            check["CheckID"] = f"service:{service['ID']}{suffix}"
        if not check["Name"]:
            check["Name"] = f"Service '{service['Service']}' check"
        check["ServiceID"] = service["ID"]


def parse_check_registration(raw: Any, script_checks: bool) -> dict[str, Any]:
    """A check from agent/check/register: it needs a Name; its ID defaults to the name."""
    fields = normalize(raw, _CHECK_KEYS, "CheckDefinition")
    if not fields.get("Name"):
        raise bad_request("Missing check name")
    status = fields.get("Status")
    if status and status not in STATUSES:
        raise bad_request("Bad check status")
    check = parse_check(raw, script_checks)
    check["CheckID"] = check["CheckID"] or check["Name"]
    return check


def safe_parse(fn, *args):
    """Run a parser, turning unexpected decode problems into 400s rather than 500s."""
    try:
        return fn(*args)
    except ConsulError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise decode_failed(str(exc)) from None


SIDECAR_PORTS = range(21000, 21256)  # Consul's sidecar_min_port..sidecar_max_port


def sidecar_for(service: dict[str, Any], raw: Any, taken_ports: set[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The sidecar proxy Consul registers for `Connect.SidecarService` (agent/sidecar_service.go):
    `<id>-sidecar-proxy`, kind connect-proxy, a port from 21000-21255 unless given, the parent's
    tags and meta unless its own, a proxy pointing at the parent, and by default two checks: its
    port listening, and an alias of the parent's health."""
    fields = normalize(_expect(raw or {}, (dict,), "ServiceDefinition", "SidecarService", "object"), _SERVICE_KEYS,
                       "ServiceDefinition")
    fields["Name"] = fields.get("Name") or f"{service['Service']}-sidecar-proxy"
    fields["ID"] = fields.get("ID") or f"{service['ID']}-sidecar-proxy"
    fields["Kind"] = "connect-proxy"
    if not fields.get("Port"):
        free = [p for p in SIDECAR_PORTS if p not in taken_ports]
        if not free:
            raise bad_request("No sidecar port available in 21000-21255")
        fields["Port"] = free[0]
    if not fields.get("Tags") and service["Tags"]:
        fields["Tags"] = list(service["Tags"])
    if not fields.get("Meta") and service["Meta"]:
        fields["Meta"] = dict(service["Meta"])
    proxy = dict(fields.get("Proxy") or {})
    proxy.setdefault("DestinationServiceName", service["Service"])
    proxy.setdefault("DestinationServiceID", service["ID"])
    proxy.setdefault("LocalServiceAddress", "127.0.0.1")
    proxy.setdefault("LocalServicePort", service["Port"])
    fields["Proxy"] = proxy
    if fields.get("Check") is None and fields.get("Checks") is None:
        address = fields.get("Address") or "127.0.0.1"
        fields["Checks"] = [
            {"Name": "Connect Sidecar Listening", "TCP": f"{address}:{fields['Port']}", "Interval": "10s"},
            {"Name": f"Connect Sidecar Aliasing {service['ID']}", "AliasService": service["ID"]},
        ]
    sidecar, checks = parse_service(fields, script_checks=False)
    return {**sidecar, "SidecarOf": service["ID"]}, checks
